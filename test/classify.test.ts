// The failure classification, checked against errors that real servers, sockets and pg produce.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { classifyFailure, isConnectionError, isPermanentConnectError, isSafeToRetry, outcomeOf, type FailureKind } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
before(async () => {
  cluster = await PgCluster.start();
  await cluster.query('CREATE ROLE reader LOGIN');
});
after(() => cluster.destroy());

/** The error `sql` raises on a fresh connection. */
async function errorOf(sql: string, config: pg.ClientConfig = {}): Promise<unknown> {
  const client = new pg.Client({ ...cluster.clientConfig(), ...config });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query(sql);
  } catch (error) {
    return error;
  } finally {
    await client.end().catch(() => undefined);
  }
  assert.fail(`${sql} should have failed`);
}

const raise = (state: string): string => `DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '${state}'; END $$`;

interface Row {
  readonly name: string;
  readonly error: () => Promise<unknown>;
  readonly kind: FailureKind;
  /** Safe to retry when sent and not idempotent; when idempotent. */
  readonly retry: [boolean, boolean];
}

const rows: Row[] = [
  { name: 'syntax error', error: () => errorOf('SELEC 1'), kind: 'query', retry: [false, false] },
  { name: 'unique violation', error: () => errorOf('CREATE TEMP TABLE u (id int primary key); INSERT INTO u VALUES (1), (1)'), kind: 'query', retry: [false, false] },
  // Raised from a DO block, which may commit inside: not retried unless the work ran as one transaction.
  { name: '40001 serialization failure', error: () => errorOf(raise('40001')), kind: 'serialization', retry: [false, false] },
  { name: '40P01 deadlock', error: () => errorOf(raise('40P01')), kind: 'deadlock', retry: [false, false] },
  { name: '25006 read-only transaction', error: () => errorOf('BEGIN READ ONLY; CREATE TABLE r (x int)'), kind: 'read-only', retry: [false, false] },
  { name: '57014 statement timeout', error: () => errorOf("SET statement_timeout = '10ms'; SELECT pg_sleep(1)"), kind: 'canceled', retry: [false, false] },
  { name: '28000 unknown role', error: () => errorOf('SELECT 1', { user: 'no_such_role' }), kind: 'auth', retry: [false, false] },
  { name: '3D000 unknown database', error: () => errorOf('SELECT 1', { database: 'no_such_db' }), kind: 'no-database', retry: [false, false] },
  { name: '53300 too many connections', error: () => errorOf(raise('53300')), kind: 'too-many-connections', retry: [true, true] },
  { name: '57P03 cannot connect now', error: () => errorOf(raise('57P03')), kind: 'server-starting', retry: [true, true] },
];

describe('classification of real server errors', () => {
  for (const row of rows) {
    test(row.name, async () => {
      const error = await row.error();
      assert.equal(classifyFailure(error), row.kind, String(error));
      assert.equal(isSafeToRetry(error, { sent: true, idempotent: false }), row.retry[0]);
      assert.equal(isSafeToRetry(error, { sent: true, idempotent: true }), row.retry[1]);
      assert.equal(isSafeToRetry(error), row.retry[0], 'without options: sent and not idempotent');
    });
  }

  test('40001 and 40P01 are retried only when the work ran as one transaction', async () => {
    for (const state of ['40001', '40P01']) {
      const error = await errorOf(raise(state));
      assert.equal(isSafeToRetry(error, { sent: true, idempotent: false, atomic: true }), true);
      assert.equal(isSafeToRetry(error, { sent: true, idempotent: true, atomic: false }), false);
    }
  });

  test("pg.Pool's own acquire timeout reads as unreachable", async () => {
    const plain = new pg.Pool({ ...cluster.clientConfig(), max: 1, connectionTimeoutMillis: 10_000 });
    const held = await plain.connect();
    // Short only for the wait: the first login (TLS and SCRAM) may take longer than 50 ms on a loaded machine.
    plain.options.connectionTimeoutMillis = 50;
    try {
      const error = await plain.connect().then(() => assert.fail('should time out'), (e: unknown) => e);
      assert.equal(classifyFailure(error), 'unreachable');
    } finally {
      held.release();
      await plain.end();
    }
  });

  test('auth and unknown database are permanent connect errors; a syntax error is not a connection error', async () => {
    assert.ok(isPermanentConnectError(await errorOf('SELECT 1', { user: 'no_such_role' })));
    assert.ok(isPermanentConnectError(await errorOf('SELECT 1', { database: 'no_such_db' })));
    assert.equal(isConnectionError(await errorOf('SELEC 1')), false);
  });
});

describe('classification of dying connections', () => {
  test('57P01 from pg_terminate_backend during a statement: lost, outcome unknown', async () => {
    const client = new pg.Client({ ...cluster.clientConfig(), application_name: 'classify-kill' });
    client.on('error', () => undefined);
    await client.connect();
    const running = client.query('SELECT pg_sleep(30)').then(() => assert.fail('should fail'), (e: unknown) => e);
    await waitFor('the statement to run', async () => (await cluster.backendPids('classify-kill')).length === 1);
    await cluster.terminateBackends('classify-kill');
    const error = await running;
    assert.equal(classifyFailure(error), 'connection-lost');
    assert.equal(outcomeOf(error, true), 'unknown');
    assert.equal(isSafeToRetry(error, { sent: true, idempotent: false }), false);
    assert.equal(isSafeToRetry(error, { sent: true, idempotent: true }), true);
    // Had it not been sent, nothing would be in doubt.
    assert.equal(isSafeToRetry(error, { sent: false, idempotent: false }), true);
    // An ORM's wrapper with no code of its own (Drizzle's "Failed query: ...") is read through.
    const wrapper = new Error('Failed query: SELECT pg_sleep(30)', { cause: error });
    assert.equal(classifyFailure(new Error('outer', { cause: wrapper })), 'connection-lost');
    assert.equal(outcomeOf(wrapper, true), 'unknown');
    assert.ok(isConnectionError(wrapper));
    const loop = new Error('wraps itself');
    Object.assign(loop, { cause: loop });
    assert.equal(classifyFailure(loop), 'unknown');
  });

  test('57P05 idle_session_timeout: the server had read nothing, so any statement may run again', async () => {
    await cluster.setSetting('idle_session_timeout', '100ms');
    const client = new pg.Client(cluster.clientConfig());
    // pg emits a second error ("terminated unexpectedly") after the first: keep listening.
    client.on('error', () => undefined);
    const died = new Promise<unknown>((resolve) => client.once('error', resolve));
    try {
      await client.connect();
      const error = await died;
      assert.equal(classifyFailure(error), 'idle-session-ended');
      assert.equal(outcomeOf(error, true), 'not-applied');
      assert.equal(isSafeToRetry(error, { sent: true, idempotent: false }), true);
    } finally {
      await cluster.resetSetting('idle_session_timeout');
    }
  });

  test("ECONNRESET, ECONNREFUSED and pg's own messages", async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    try {
      const client = new pg.Client({ ...cluster.clientConfig(), host: proxy.host, port: proxy.port });
      client.on('error', () => undefined);
      const reset = new Promise<unknown>((resolve) => client.once('error', resolve));
      await client.connect();
      proxy.resetAll();
      const resetError = await reset;
      assert.equal(classifyFailure(resetError), 'connection-lost', String(resetError));
      const notQueryable = await client.query('SELECT 1').then(() => assert.fail('should fail'), (e: unknown) => e);
      assert.match(String(notQueryable), /not queryable/);
      // pg refuses before writing anything: not sent, whatever the caller thought.
      assert.equal(outcomeOf(notQueryable, true), 'not-applied');

      await proxy.refuse();
      const refused = await errorOf('SELECT 1', { host: proxy.host, port: proxy.port });
      assert.equal(classifyFailure(refused), 'unreachable');
      assert.ok(isConnectionError(refused));
    } finally {
      await proxy.close();
    }
  });
});
