import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { AcquireTimeoutError, ConnectFailedError, ConnectionLostError, OutcomeUnknownError, Pool, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
let counter = 0;

before(async () => {
  cluster = await PgCluster.start();
});
after(async () => {
  await cluster.destroy();
});

/** A pool with its own application_name, so faults can target its backends alone. */
function makePool(options: PoolOptions = {}): { pool: Pool; app: string } {
  const app = `faults-${process.pid}-${++counter}`;
  return { pool: new Pool({ ...cluster.clientConfig(), application_name: app, ...options }), app };
}

/** Opens `n` connections at once and returns their backend pids. */
async function warm(pool: Pool, n: number): Promise<number[]> {
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()));
  const pids = clients.map((c) => (c as unknown as { processID: number }).processID);
  for (const c of clients) c.release();
  return pids;
}

async function queryAll(pool: Pool, n: number): Promise<number> {
  const results = await Promise.all(Array.from({ length: n }, (_, i) => pool.query('SELECT $1::int AS i', [i])));
  return results.length;
}

describe('dead idle connections are never handed out', () => {
  test('every idle backend killed: the next queries all succeed and no error event fires', async () => {
    const { pool, app } = makePool({ max: 5 });
    try {
      await warm(pool, 5);
      assert.equal(await cluster.terminateBackends(app), 5);
      await waitFor('the pool to drop the dead connections', () => pool.stats().evictions.died === 5);
      // No 'error' listener is attached: with pg.Pool this would have crashed the process.
      assert.equal(await queryAll(pool, 10), 10);
      assert.equal(pool.stats().validations, 0, 'deaths are seen from socket events, without a probe round trip');
    } finally {
      await pool.end();
    }
  });

  test('a reset socket is dropped at once, without a round trip', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const { pool } = makePool({ host: proxy.host, port: proxy.port, max: 3 });
    try {
      await warm(pool, 3);
      proxy.resetAll();
      await waitFor('the pool to drop the reset connections', () => pool.stats().evictions.died === 3);
      assert.equal(pool.totalCount, 0);
      assert.equal(await queryAll(pool, 3), 3);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('a fast restart while idle: the next queries succeed', async () => {
    const { pool } = makePool({ max: 4 });
    try {
      await warm(pool, 4);
      await cluster.restart('fast');
      assert.equal(await queryAll(pool, 8), 8);
    } finally {
      await pool.end();
    }
  });

  test('a crash while idle, then the server back: the next queries succeed', async () => {
    const { pool } = makePool({ max: 3 });
    try {
      await warm(pool, 3);
      await cluster.crash();
      await cluster.startAgain();
      assert.equal(await queryAll(pool, 6), 6);
    } finally {
      await pool.end();
    }
  });

  test('idle_session_timeout shorter than the pool idle time: keepalive tuned below it, no errors', async () => {
    await cluster.setSetting('idle_session_timeout', '300ms');
    const { pool } = makePool({ max: 2 });
    try {
      for (let round = 1; round <= 3; round++) {
        assert.equal(await queryAll(pool, 2), 2);
        // An idle gap longer than the server's timeout, measured in keepalive pings.
        const pings = pool.stats().validations;
        await waitFor('an idle gap past the server timeout', () => pool.stats().validations >= pings + 6);
      }
      assert.equal(pool.stats().keepaliveIntervalMillis, 150, 'half the server timeout');
      assert.equal(pool.stats().evictions.died, 0, 'pinged in time, nothing was killed');
    } finally {
      await pool.end();
      await cluster.resetSetting('idle_session_timeout');
    }
  });

  test('idle_session_timeout with keepalive off: the pool closes idle connections first, and logs the conflict once', async () => {
    await cluster.setSetting('idle_session_timeout', '300ms');
    const warnings: string[] = [];
    const { pool } = makePool({ max: 2, keepaliveIntervalMillis: 0, logger: { warn: (message: unknown) => warnings.push(String(message)) } });
    try {
      for (let round = 1; round <= 3; round++) {
        assert.equal(await queryAll(pool, 2), 2);
        // The idle gap: connections go, closed by the pool at half the server's timeout.
        await waitFor('the idle connections to be closed', () => pool.totalCount === 0);
      }
      assert.ok(pool.stats().evictions['idle-timeout'] >= 4, JSON.stringify(pool.stats().evictions));
      assert.equal(warnings.filter((w) => w.includes('idle_session_timeout')).length, 1, warnings.join('\n'));
      assert.match(warnings[0] ?? '', /keepaliveIntervalMillis is 0/);
    } finally {
      await pool.end();
      await cluster.resetSetting('idle_session_timeout');
    }
  });
});

describe('connections that die while checked out', () => {
  test('killed during a query: the query rejects, typed, with its outcome unknown, and the process survives', async () => {
    const { pool, app } = makePool({ max: 2 });
    try {
      const running = pool.query('SELECT pg_sleep(30)').then(() => assert.fail('the query should fail'), (e: unknown) => e);
      await waitFor('the query to start', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).length === 1);
      await cluster.terminateBackends(app);
      const error = await running;
      // The statement was running: it may have had effects, and it is not marked idempotent.
      assert.ok(error instanceof OutcomeUnknownError, `got ${String(error)}`);
      assert.ok(error instanceof ConnectionLostError);
      // pg's code stays; pg-lifeline's own is lifelineCode.
      assert.equal(error.code, '57P01');
      assert.equal(error.lifelineCode, 'PGL_OUTCOME_UNKNOWN');
      assert.equal(error.outcome, 'unknown');
      assert.equal(error.sqlState, '57P01');
      assert.ok(error.ageMillis >= 0);
      assert.equal(pool.stats().evictions.died, 1);
      await waitFor('the socket to close', () => pool.stats().invalidations > 0);
      assert.equal(pool.stats().invalidations, 1, 'one death, one invalidation');
      assert.equal((await pool.query('SELECT 1 AS ok')).rows[0]?.ok, 1);
    } finally {
      await pool.end();
    }
  });

  test('killed between two queries on a checked-out client: the next query rejects, typed', async () => {
    const { pool, app } = makePool({ max: 1 });
    try {
      const client = await pool.connect();
      await client.query('SELECT 1');
      await cluster.terminateBackends(app);
      await waitFor('the connection to be seen dead', () => pool.stats().active === 1 && pool.stats().invalidations > 0);
      await assert.rejects(client.query('SELECT 1'), ConnectionLostError);
      client.release();
      assert.equal(pool.stats().evictions.died, 1);
      assert.equal((await pool.query('SELECT 2 AS ok')).rows[0]?.ok, 2);
    } finally {
      await pool.end();
    }
  });
  test('killed while a statement runs and another waits behind it: the waiting one is known not to have run', async () => {
    const { pool, app } = makePool({ max: 1 });
    try {
      const client = await pool.connect();
      await client.query('CREATE TEMP TABLE queued (n int)');
      const running = client.query('SELECT pg_sleep(30)').then(() => assert.fail('should fail'), (e: unknown) => e);
      // pg holds this one in its queue until the sleep finishes, so it never reaches the server.
      const waiting = client.query('INSERT INTO queued VALUES (1)').then(() => assert.fail('should fail'), (e: unknown) => e);
      await waitFor('the sleep to run', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).length === 1);
      await cluster.terminateBackends(app);
      assert.ok((await running) instanceof OutcomeUnknownError, 'the running statement may have taken effect');
      const never = await waiting;
      assert.ok(never instanceof ConnectionLostError && !(never instanceof OutcomeUnknownError), `the queued one did not run: ${String(never)}`);
      assert.equal(never.outcome, 'not-applied');
      client.release();
    } finally {
      await pool.end();
    }
  });
});

describe('suspicion after a server-wide failure', () => {
  test('one terminated connection makes every older one validated before reuse', async () => {
    // A wide window: without the generation rule, nothing here would be validated.
    const { pool } = makePool({ max: 3, validationWindowMillis: 600_000 });
    try {
      const pids = await warm(pool, 3);
      await cluster.query('SELECT pg_terminate_backend($1)', [pids[0]]);
      await waitFor('the death to be seen', () => pool.stats().evictions.died === 1);
      assert.equal(pool.stats().invalidations, 1);
      assert.equal(await queryAll(pool, 3), 3);
      assert.equal(pool.stats().validations, 2, 'the two survivors were each probed once');
      assert.equal(await queryAll(pool, 3), 3);
      assert.equal(pool.stats().validations, 2, 'once validated, they are trusted again');
    } finally {
      await pool.end();
    }
  });

  test('a failure seen first by a query also makes the others suspect', async () => {
    const { pool, app } = makePool({ max: 3, validationWindowMillis: 600_000 });
    try {
      await warm(pool, 3);
      const running = pool.query('SELECT pg_sleep(30)').then(() => assert.fail('the query should fail'), (e: unknown) => e);
      await waitFor('the query to start', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).length === 1);
      const [victim] = (await cluster.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).map((r) => r.pid);
      await cluster.query('SELECT pg_terminate_backend($1)', [victim]);
      assert.ok((await running) instanceof ConnectionLostError);
      assert.equal(pool.stats().invalidations, 1);
      assert.equal(await queryAll(pool, 2), 2);
      assert.equal(pool.stats().validations, 2, 'both idle survivors were probed before reuse');
    } finally {
      await pool.end();
    }
  });

  test('inside the idle window no probe is sent; past it, one is', async () => {
    const { pool: trusting } = makePool({ max: 1, validationWindowMillis: 600_000 });
    const { pool: strict } = makePool({ max: 1, validationWindowMillis: 0 });
    try {
      for (let i = 0; i < 5; i++) await trusting.query('SELECT 1');
      assert.equal(trusting.stats().validations, 0);
      for (let i = 0; i < 5; i++) await strict.query('SELECT 1');
      assert.ok(strict.stats().validations >= 4, `validations: ${strict.stats().validations}`);
    } finally {
      await trusting.end();
      await strict.end();
    }
  });
});

describe('half-open connections', () => {
  test('a silently dead idle connection fails its checkout probe and is replaced', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const { pool } = makePool({ host: proxy.host, port: proxy.port, max: 1, validationWindowMillis: 0, validationTimeoutMillis: 200, connectAttemptTimeoutMillis: 500 });
    try {
      await warm(pool, 1);
      proxy.blackhole();
      const pending = pool.query('SELECT 1 AS ok');
      await waitFor('the probe to fail', () => pool.stats().failedValidations === 1);
      proxy.passThrough();
      assert.equal((await pending).rows[0]?.ok, 1);
      assert.equal(pool.stats().evictions['failed-check'], 1);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('keepalive pings find a dead idle connection before anyone asks for it', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const { pool } = makePool({ host: proxy.host, port: proxy.port, max: 2, keepaliveIntervalMillis: 100, validationTimeoutMillis: 200 });
    try {
      await warm(pool, 2);
      proxy.blackhole();
      await waitFor('keepalive to evict both', () => pool.stats().evictions['failed-check'] === 2);
      assert.equal(pool.totalCount, 0);
      proxy.passThrough();
      assert.equal(await queryAll(pool, 2), 2);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });
});

describe('acquire deadlines and outages', () => {
  test('server unreachable: the timeout says so and carries the last connect error', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    await proxy.refuse();
    const { pool } = makePool({ host: proxy.host, port: proxy.port, connectionTimeoutMillis: 300 });
    try {
      const error = await pool.query('SELECT 1').then(() => assert.fail('should time out'), (e: unknown) => e);
      assert.ok(error instanceof AcquireTimeoutError);
      assert.equal(error.reason, 'unreachable');
      assert.equal((error.cause as { code?: string }).code, 'ECONNREFUSED');
      assert.match(error.message, /could not be reached/);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('pool exhausted: the timeout says so, with the counts', async () => {
    // Opened up front: on a loaded machine, opening alone can take longer than this short deadline.
    const { pool } = makePool({ max: 1, min: 1, connectionTimeoutMillis: 100 });
    await waitFor('the connection to open', () => pool.idleCount === 1);
    const held = await pool.connect();
    try {
      const error = await pool.connect().then(() => assert.fail('should time out'), (e: unknown) => e);
      assert.ok(error instanceof AcquireTimeoutError);
      assert.equal(error.reason, 'exhausted');
      assert.deepEqual(error.counts, { total: 1, idle: 0, waiting: 1, opening: 0, max: 1 });
    } finally {
      held.release();
      await pool.end();
    }
  });

  test('waiters are served as soon as the server accepts connections again', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    await proxy.refuse();
    const { pool } = makePool({ host: proxy.host, port: proxy.port, max: 4 });
    try {
      const pending = queryAll(pool, 4);
      await waitFor('a few refused attempts', () => pool.stats().connectErrors >= 3);
      assert.ok(pool.totalCount <= 1, 'while failing, one connect attempt at a time');
      await proxy.accept();
      assert.equal(await pending, 4);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('a permanent connect error fails waiters at once instead of retrying', async () => {
    const { pool } = makePool({ database: 'no_such_database', connectionTimeoutMillis: 60_000 });
    try {
      const error = await pool.query('SELECT 1').then(() => assert.fail('should fail'), (e: unknown) => e);
      assert.ok(error instanceof ConnectFailedError, `got ${String(error)}`);
      assert.equal(error.sqlState, '3D000');
    } finally {
      await pool.end();
    }
  });

  test('an idle death is re-emitted as error only to listeners, and always as evict', async () => {
    const { pool, app } = makePool({ max: 1 });
    try {
      await warm(pool, 1);
      const errorEvent = once(pool, 'error');
      const evictEvent = once(pool, 'evict');
      await cluster.terminateBackends(app);
      const [[error], [evicted]] = await Promise.all([errorEvent, evictEvent]);
      assert.equal((error as { code?: string }).code, '57P01');
      assert.equal((evicted as { reason: string }).reason, 'died');
    } finally {
      await pool.end();
    }
  });
});
