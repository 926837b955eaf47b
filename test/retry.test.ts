// Automatic retry of statements through pool.query: what is retried, what never is, and how.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { OutcomeUnknownError, Pool, QueryTimeoutError, ServerUnavailableError, isOutcomeUnknown, type PoolOptions, type RetryEvent } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
let counter = 0;
before(async () => {
  cluster = await PgCluster.start();
  await cluster.query('CREATE TABLE notes (id int primary key, body text)');
});
after(() => cluster.destroy());

function makePool(options: PoolOptions = {}): { pool: Pool; app: string } {
  const app = `retry-${process.pid}-${++counter}`;
  return { pool: new Pool({ ...cluster.clientConfig(), application_name: app, ...options }), app };
}

async function activeQueries(app: string): Promise<number> {
  const rows = await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app]);
  return rows.length;
}

/** Runs `query` on `pool`, kills its backend once it is running, and returns how it settled. */
async function killWhileRunning(app: string, query: Promise<unknown>): Promise<unknown> {
  const outcome = query.then((value) => ({ value }), (error: unknown) => ({ error }));
  await waitFor('the statement to run', async () => (await activeQueries(app)) === 1);
  await cluster.terminateBackends(app);
  return outcome;
}

async function notes(id: number): Promise<number> {
  return (await cluster.query('SELECT 1 FROM notes WHERE id = $1', [id])).length;
}

describe('statements', () => {
  test('an idempotent statement killed mid-flight is retried; the app never knows', async () => {
    const { pool, app } = makePool();
    const retries: RetryEvent[] = [];
    pool.on('retry', (event: RetryEvent) => retries.push(event));
    try {
      const settled = (await killWhileRunning(app, pool.query({ text: 'SELECT pg_sleep(0.3), 42 AS answer', idempotent: true }))) as { value?: { rows: { answer: number }[] } };
      assert.equal(settled.value?.rows[0]?.answer, 42);
      assert.equal(retries.length, 1);
      assert.equal(retries[0]?.kind, 'connection-lost');
      assert.equal(pool.stats().retries, 1);
      assert.equal(pool.stats().retriesByKind['connection-lost'], 1);
    } finally {
      await pool.end();
    }
  });

  test('the pool-wide idempotent option (a read-only pool) retries every statement', async () => {
    const { pool, app } = makePool({ idempotent: true });
    try {
      const settled = (await killWhileRunning(app, pool.query('SELECT pg_sleep(0.3), 7 AS n'))) as { value?: { rows: { n: number }[] } };
      assert.equal(settled.value?.rows[0]?.n, 7);
    } finally {
      await pool.end();
    }
  });

  test('a write killed mid-flight is never retried: OutcomeUnknownError, and it did not double-apply', async () => {
    const { pool, app } = makePool();
    try {
      const write = pool.query({ text: 'WITH w AS (INSERT INTO notes VALUES (1, $1) RETURNING 1) SELECT pg_sleep(0.3) FROM w', values: ['one'] });
      const settled = (await killWhileRunning(app, write)) as { error?: unknown };
      assert.ok(settled.error instanceof OutcomeUnknownError, String(settled.error));
      assert.ok(isOutcomeUnknown(settled.error));
      assert.equal(pool.stats().retries, 0);
      // Killed before its end, the statement's transaction rolled back: "unknown" was honest, not wrong.
      assert.equal(await notes(1), 0);
    } finally {
      await pool.end();
    }
  });

  test('a write the server never read (its idle session already ended) is retried, whatever it is', async () => {
    // The proxy delays the server's goodbye, so the pool sends into a session the server has
    // already closed: the failure is 57P05, which proves the statement was never read.
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const { pool, app } = makePool({ host: proxy.host, port: proxy.port, max: 1, validationWindowMillis: 600_000, keepaliveIntervalMillis: 0 });
    try {
      // The limit comes after the connect: a pool that knows it retires idle connections before the
      // server ends them. The session picks it up with its next statement.
      await pool.query('SELECT 1');
      await cluster.setSetting('idle_session_timeout', '200ms');
      await pool.query('SELECT 1');
      proxy.latency(1500);
      await waitFor('the server to end the idle session', async () => (await cluster.backendPids(app)).length === 0);
      const pending = pool.query({ text: 'INSERT INTO notes VALUES (2, $1)', values: ['two'] });
      await waitFor('the statement to fail once', () => pool.stats().retries === 1, { timeoutMs: 15_000 });
      proxy.latency(0);
      await pending;
      assert.equal(pool.stats().retriesByKind['idle-session-ended'], 1, JSON.stringify(pool.stats().retriesByKind));
      assert.equal(await notes(2), 1);
    } finally {
      await pool.end();
      await proxy.close();
      await cluster.resetSetting('idle_session_timeout');
    }
  });

  test('an aborted signal stops the retry: the failure reaches the caller', async () => {
    const { pool, app } = makePool();
    try {
      const controller = new AbortController();
      const settled = pool.query({ text: 'SELECT pg_sleep(5)', idempotent: true, signal: controller.signal }).then((value) => ({ value }), (error: unknown) => ({ error }));
      await waitFor('the statement to run', async () => (await activeQueries(app)) === 1);
      // The running statement is not interrupted by the signal; the retry after its failure is.
      controller.abort(new Error('caller gave up'));
      await cluster.terminateBackends(app);
      const result = (await settled) as { error?: unknown };
      assert.ok(result.error instanceof Error, 'the failure is not retried');
      assert.equal(pool.stats().retries, 0);
    } finally {
      await pool.end();
    }
  });

  test('SQL errors are never retried', async () => {
    const { pool } = makePool();
    try {
      await assert.rejects(pool.query({ text: 'SELEC 1', idempotent: true }), { code: '42601' });
      assert.equal(pool.stats().retries, 0);
    } finally {
      await pool.end();
    }
  });

  test('retry: false and an empty budget both let the failure through', async () => {
    for (const options of [{ retry: false as const }, { retry: { budgetBurst: 0, budgetRatio: 0 } }]) {
      const { pool, app } = makePool(options);
      try {
        const settled = (await killWhileRunning(app, pool.query({ text: 'SELECT pg_sleep(0.3)', idempotent: true }))) as { error?: unknown };
        assert.ok(settled.error instanceof Error, JSON.stringify(options));
        assert.equal(pool.stats().retries, 0);
      } finally {
        await pool.end();
      }
    }
  });
});

describe('query_timeout', () => {
  test('a statement past its deadline is canceled on the server and its connection dropped', async () => {
    const { pool, app } = makePool({ query_timeout: 200 });
    try {
      const error = await pool.query('SELECT pg_sleep(30)').then(() => assert.fail('should time out'), (e: unknown) => e);
      assert.ok(error instanceof QueryTimeoutError, String(error));
      assert.equal(error.timeoutMillis, 200);
      assert.ok(isOutcomeUnknown(error));
      // The server stopped working on it: no backend of this pool is still running the sleep.
      await waitFor('the statement to stop on the server', async () => (await activeQueries(app)) === 0);
      assert.equal((await pool.query('SELECT 1 AS ok')).rows[0]?.ok, 1);
    } finally {
      await pool.end();
    }
  });

  test('a dead network cannot hang an idempotent statement: it times out, then succeeds on a new connection', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const { pool } = makePool({ host: proxy.host, port: proxy.port, query_timeout: 300, connectAttemptTimeoutMillis: 500 });
    try {
      await pool.query('SELECT 1');
      proxy.blackhole(1000);
      const result = await pool.query({ text: 'SELECT 3 AS n', idempotent: true });
      assert.equal(result.rows[0]?.n, 3);
      assert.ok((pool.stats().retriesByKind['query-timeout'] ?? 0) >= 1);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });
});

describe('failFast', () => {
  test('while the server is down, checkouts fail at once; the pool notices it is back by itself', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    await proxy.refuse();
    const { pool } = makePool({ host: proxy.host, port: proxy.port, failFast: true, connectionTimeoutMillis: 60_000 });
    try {
      const first = await pool.query('SELECT 1').then(() => assert.fail('should fail'), (e: unknown) => e);
      assert.ok(first instanceof ServerUnavailableError, String(first));
      assert.equal((first.cause as { code?: string }).code, 'ECONNREFUSED');
      // Later calls do not queue for 60 s behind the outage either.
      await assert.rejects(pool.query('SELECT 1'), ServerUnavailableError);
      await proxy.accept();
      await waitFor('the background probe to reconnect', () => pool.idleCount === 1);
      assert.equal((await pool.query('SELECT 1 AS ok')).rows[0]?.ok, 1);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });
});
