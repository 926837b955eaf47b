// pg's error contract (README "Errors"): each failure runs on pg.Pool and on pg-lifeline's Pool
// with the same app code, and pg-lifeline's error must keep pg.Pool's `code`, begin with pg.Pool's
// message, carry pg's fields, hand back the app's own hook errors as they are, and still add its
// own classification (`lifelineCode`, the class, `outcome`, `diagnosis`).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import pg from 'pg';
import {
  AcquireTimeoutError,
  ConnectFailedError,
  ConnectionLostError,
  DoubleReleaseError,
  LifelineError,
  OutcomeUnknownError,
  PoolEndedError,
  QueryTimeoutError,
  isConnectionError,
  isOutcomeUnknown,
  isSafeToRetry,
  type LifelineErrorCode,
} from '../src/index.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';
import { bounded, implementations, useCluster, type Impl, type Options } from './parity-shared.js';

const cluster = useCluster();
type Failure = Error & Record<string, unknown>;

// Unhandled rejections anywhere in this file fail the test that caused them.
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
before(() => process.on('unhandledRejection', onUnhandled));
after(() => {
  process.off('unhandledRejection', onUnhandled);
  assert.deepEqual(unhandled, []);
});

let seq = 0;

/** Runs `scenario` on a fresh pool of `impl`, with retry off so both pools see the same failure; returns what it rejected with. */
async function failureOf(impl: Impl, options: Options, scenario: (pool: pg.Pool, app: string) => Promise<unknown>): Promise<Failure> {
  const app = `contract-${process.pid}-${++seq}`;
  const make = implementations.find((i) => i.name === impl)!.make;
  const pool = make({ ...cluster().clientConfig(), application_name: app, retry: false, ...options });
  pool.on('error', () => undefined);
  try {
    const outcome = await bounded(
      scenario(pool, app).then(
        () => undefined,
        (error: unknown) => error,
      ),
      `${impl}: the failure`,
      15_000,
    );
    assert.ok(outcome instanceof Error, `${impl} should have failed with an Error, got ${String(outcome)}`);
    return outcome as Failure;
  } finally {
    await cluster().terminateBackends(app);
    if (!pool.ending) await bounded(pool.end(), `${impl}: end()`, 10_000).catch(() => undefined);
  }
}

/** Both pools' failures for the same scenario. */
async function both(options: Options, scenario: (pool: pg.Pool, app: string) => Promise<unknown>): Promise<{ theirs: Failure; ours: Failure }> {
  return { theirs: await failureOf('pg.Pool', options, scenario), ours: await failureOf('pg-lifeline', options, scenario) };
}

// pg's variable parts (ports, pids, durations) differ between the two runs.
const normalized = (text: string): string => text.replace(/\d+/g, 'N');

/** The contract itself: pg.Pool's code (or ours where pg has none), pg.Pool's message first, and our additions. */
function assertContract(theirs: Failure, ours: Failure, lifelineCode: LifelineErrorCode, Class: abstract new (...args: never[]) => LifelineError): void {
  assert.ok(ours instanceof Class, `expected a ${Class.name}, got ${ours.name}: ${ours.message}`);
  assert.equal(ours.lifelineCode, lifelineCode);
  assert.equal(ours.code, theirs.code ?? lifelineCode, `code: pg.Pool said ${String(theirs.code)}`);
  assert.ok(
    normalized(ours.message).startsWith(normalized(theirs.message)),
    `pg-lifeline's message should begin with pg.Pool's:\n  pg.Pool:     ${theirs.message}\n  pg-lifeline: ${ours.message}`,
  );
  assert.ok(ours.message.length > theirs.message.length, "pg-lifeline's explanation follows pg's text");
  for (const field of ['severity', 'detail', 'hint', 'schema', 'table', 'column', 'constraint', 'routine', 'errno', 'syscall', 'address']) {
    if (theirs[field] !== undefined) assert.equal(ours[field], theirs[field], `field ${field}`);
  }
  // Spreading or serializing keeps all of it: nothing rides in a hidden property.
  assert.equal({ ...ours }.code, ours.code);
  assert.equal({ ...ours }.lifelineCode, lifelineCode);
}

const activeSleeps = async (app: string): Promise<number> => {
  const sql = "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%'";
  return Number((await cluster().query<{ n: string }>(sql, [app]))[0]?.n);
};

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('the error contract: pg-lifeline keeps pg.Pool code, message and fields', { timeout: 120_000 }, () => {
  test('backend terminated mid-query: 57P01, severity FATAL, an OutcomeUnknownError with a diagnosis', async () => {
    const { theirs, ours } = await both({}, async (pool, app) => {
      const sleeping = pool.query('SELECT pg_sleep(20)');
      sleeping.catch(() => undefined);
      await waitFor('the statement to run', async () => (await activeSleeps(app)) === 1);
      await cluster().terminateBackends(app);
      return sleeping;
    });
    assert.equal(theirs.code, '57P01');
    assertContract(theirs, ours, 'PGL_OUTCOME_UNKNOWN', OutcomeUnknownError);
    assert.ok(ours instanceof ConnectionLostError);
    assert.equal(ours.severity, 'FATAL');
    assert.equal(ours.outcome, 'unknown');
    assert.equal(ours.sqlState, '57P01');
    assert.equal((ours.diagnosis as { cause: string }).cause, 'admin-terminated');
    // The predicates read the contract's error as they read pg's own.
    assert.equal(isConnectionError(ours), true);
    assert.equal(isConnectionError(theirs), true);
    assert.equal(isOutcomeUnknown(ours), true);
    assert.equal(isSafeToRetry(ours, { sent: true, idempotent: false }), false);
    assert.equal(isSafeToRetry(ours, { sent: true, idempotent: true }), true);
  });

  test('server refusing connections: ECONNREFUSED leads an AcquireTimeoutError that still says timeout', async () => {
    const port = await closedPort();
    const { theirs, ours } = await both({ host: '127.0.0.1', port, connectionTimeoutMillis: 300 }, (pool) => pool.query('SELECT 1'));
    assert.equal(theirs.code, 'ECONNREFUSED');
    assertContract(theirs, ours, 'PGL_ACQUIRE_TIMEOUT', AcquireTimeoutError);
    assert.match(ours.message, /timeout/);
    assert.equal(ours.reason, 'unreachable');
    assert.equal((ours.cause as { code?: unknown }).code, 'ECONNREFUSED');
    assert.equal(ours.port, port);
  });

  test('connection reset mid-query: pg.Pool code (ECONNRESET) and message, an OutcomeUnknownError', async () => {
    const proxy = await FaultProxy.start(cluster().clientConfig());
    try {
      const { theirs, ours } = await both({ host: '127.0.0.1', port: proxy.port }, async (pool, app) => {
        const sleeping = pool.query('SELECT pg_sleep(20)');
        sleeping.catch(() => undefined);
        await waitFor('the statement to run', async () => (await activeSleeps(app)) === 1);
        proxy.resetAll();
        return sleeping;
      });
      assertContract(theirs, ours, 'PGL_OUTCOME_UNKNOWN', OutcomeUnknownError);
      assert.equal(ours.outcome, 'unknown');
      assert.equal(isConnectionError(ours), true);
      assert.equal(isSafeToRetry(ours, { sent: true, idempotent: true }), true);
    } finally {
      await proxy.close();
    }
  });

  test('acquire timeout on an exhausted pool: the message begins "timeout exceeded when trying to connect"', async () => {
    // Long enough for the first connection to open on a loaded machine.
    const { theirs, ours } = await both({ max: 1, connectionTimeoutMillis: 1500 }, async (pool) => {
      const held = await pool.connect();
      try {
        await pool.connect();
      } finally {
        held.release();
      }
    });
    assert.equal(theirs.message, 'timeout exceeded when trying to connect');
    assertContract(theirs, ours, 'PGL_ACQUIRE_TIMEOUT', AcquireTimeoutError);
    assert.match(ours.message, /timeout/);
    assert.equal(ours.reason, 'exhausted');
  });

  test("query_timeout: the message begins 'Query read timeout', a QueryTimeoutError of unknown outcome", async () => {
    const { theirs, ours } = await both({ query_timeout: 200 }, (pool) => pool.query('SELECT pg_sleep(20)'));
    assert.equal(theirs.message, 'Query read timeout');
    assertContract(theirs, ours, 'PGL_QUERY_TIMEOUT', QueryTimeoutError);
    assert.equal(ours.outcome, 'unknown');
    assert.ok(ours.diagnosis !== undefined);
    assert.equal(isOutcomeUnknown(ours), true);
    assert.equal(isSafeToRetry(ours, { sent: true, idempotent: false }), false);
  });

  test('an onConnect hook that throws: both pools reject with the very error it threw', async () => {
    const thrown: Error[] = [];
    const onConnect = async (): Promise<void> => {
      const error = Object.assign(new Error('tenant not configured'), { code: 'APP_TENANT' });
      thrown.push(error);
      throw error;
    };
    const { theirs, ours } = await both({ onConnect }, (pool) => pool.query('SELECT 1'));
    assert.equal(theirs, thrown[0]);
    assert.equal(ours, thrown[thrown.length - 1]);
    assert.equal(ours.code, 'APP_TENANT');
    assert.equal(ours instanceof LifelineError, false);
  });

  test('a verify hook that fails: both pools reject with the very error it passed', async () => {
    const failed: Error[] = [];
    const verify = (_client: pg.PoolClient, done: (err?: Error) => void): void => {
      const error = new Error('replica lag too high');
      failed.push(error);
      done(error);
    };
    const { theirs, ours } = await both({ verify }, (pool) => pool.query('SELECT 1'));
    assert.equal(theirs, failed[0]);
    assert.equal(ours, failed[failed.length - 1]);
  });

  test('unique violation: pg`s own DatabaseError passes through, 23505 with its constraint and detail', async () => {
    const table = `contract_unique_${process.pid}`;
    await cluster().query(`CREATE TABLE IF NOT EXISTS ${table} (id int CONSTRAINT ${table}_id_key UNIQUE)`);
    await cluster().query(`TRUNCATE ${table}`);
    await cluster().query(`INSERT INTO ${table} VALUES (1)`);
    const { theirs, ours } = await both({}, (pool) => pool.query(`INSERT INTO ${table} VALUES (1)`));
    assert.equal(theirs.code, '23505');
    assert.equal(ours.code, '23505');
    assert.equal(ours.constraint, `${table}_id_key`);
    assert.equal(ours.detail, theirs.detail);
    assert.equal(ours.message, theirs.message);
    assert.ok(ours instanceof pg.DatabaseError);
    assert.equal(ours instanceof LifelineError, false);
    assert.equal(isConnectionError(ours), false);
  });

  test('wrong password: 28P01 and pg`s message lead a ConnectFailedError', async () => {
    const { theirs, ours } = await both({ password: 'not-the-password' }, (pool) => pool.query('SELECT 1'));
    assert.equal(theirs.code, '28P01');
    assertContract(theirs, ours, 'PGL_CONNECT_FAILED', ConnectFailedError);
    assert.equal(ours.sqlState, '28P01');
    assert.equal((ours.cause as { code?: unknown }).code, '28P01');
    assert.match(ours.message, /Retrying will not help/);
  });

  test('a pool used after end(): the message begins as pg.Pool`s, with a PGL_ code where pg has none', async () => {
    const { theirs, ours } = await both({}, async (pool) => {
      await pool.end();
      return pool.query('SELECT 1');
    });
    assert.equal(theirs.message, 'Cannot use a pool after calling end on the pool');
    assertContract(theirs, ours, 'PGL_POOL_ENDED', PoolEndedError);
  });

  test('release() twice: the message begins as pg.Pool`s', async () => {
    const { theirs, ours } = await both({}, async (pool) => {
      const client = await pool.connect();
      client.release();
      client.release();
    });
    assert.equal(theirs.message, 'Release called on client which has already been released to the pool.');
    assertContract(theirs, ours, 'PGL_DOUBLE_RELEASE', DoubleReleaseError);
  });
});
