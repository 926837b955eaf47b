// Errors that explain themselves, what the pool learns about its servers and the network, and
// the stats, events and logs that report it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ConnectionLostError, OutcomeUnknownError, Pool, QueryTimeoutError, isOutcomeUnknown, type EvictionEvent, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
let counter = 0;
before(async () => {
  cluster = await PgCluster.start();
});
after(() => cluster.destroy());

function makePool(options: PoolOptions = {}): { pool: Pool; app: string } {
  const app = `diagnosis-${process.pid}-${++counter}`;
  return { pool: new Pool({ ...cluster.clientConfig(), application_name: app, ...options }), app };
}

describe('errors that explain themselves', () => {
  test('a connection killed under a statement: cause, age, idle time, host and server settings', async () => {
    const { pool, app } = makePool();
    try {
      await pool.query('SELECT 1');
      const evicted = new Promise<EvictionEvent>((resolve) => pool.on('evict', resolve));
      const running = pool.query('SELECT pg_sleep(30)').then(() => assert.fail('should fail'), (e: unknown) => e);
      await waitFor('the statement to run', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).length === 1);
      await cluster.terminateBackends(app);
      const error = await running;
      assert.ok(error instanceof OutcomeUnknownError);
      // So does an ORM's wrapper around it (Drizzle's DrizzleQueryError has no code of its own).
      assert.ok(isOutcomeUnknown(new Error('Failed query: SELECT pg_sleep(30)', { cause: error })));
      const d = error.diagnosis;
      assert.equal(d.cause, 'admin-terminated');
      assert.equal(d.host, `${cluster.host}:${cluster.port}`);
      assert.ok(d.ageMillis > 0);
      assert.equal(d.server?.idleSessionTimeoutMillis, 0);
      assert.ok((d.server?.startedAt ?? 0) > 0, 'the server start time was learned');
      assert.match(error.message, /administrator command/);
      assert.match(error.message, /To avoid it: /);
      // The eviction tells the same story, not the socket's "Connection terminated" that followed.
      const eviction = await evicted;
      assert.equal(eviction.reason, 'died');
      assert.equal(eviction.diagnosis?.cause, 'admin-terminated');
    } finally {
      await pool.end();
    }
  });

  test('a checked-out connection killed between statements: the next one names the kill, not a generic error', async () => {
    const { pool, app } = makePool();
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await cluster.terminateBackends(app);
      await waitFor('the pool to see the death', () => pool.stats().invalidations === 1);
      const error = await client.query('SELECT 1').then(() => assert.fail('should fail'), (e: unknown) => e);
      assert.ok(error instanceof ConnectionLostError);
      assert.equal(error.diagnosis.cause, 'admin-terminated');
      assert.equal(error.sqlState, '57P01');
      assert.match(error.message, /administrator command/);
    } finally {
      client.release();
      await pool.end();
    }
  });

  test('a checked-out client killed under a statement: the eviction names the kill, not the socket closing after it', async () => {
    const { pool, app } = makePool();
    const evicted = new Promise<EvictionEvent>((resolve) => pool.on('evict', resolve));
    const client = await pool.connect();
    let failure: unknown;
    try {
      const running = client.query('SELECT pg_sleep(30)').then(() => assert.fail('should fail'), (e: unknown) => e);
      await waitFor('the statement to run', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).length === 1);
      await cluster.terminateBackends(app);
      failure = await running;
      // Released only once the socket has closed too, so the pool has both errors to choose from.
      await waitFor('the pool to see the death', () => pool.stats().invalidations === 1);
    } finally {
      client.release(failure instanceof Error ? failure : undefined);
    }
    try {
      const eviction = await evicted;
      assert.equal(eviction.reason, 'died');
      assert.equal(eviction.diagnosis?.cause, 'admin-terminated');
      assert.match(String(eviction.error), /administrator command/);
    } finally {
      await pool.end();
    }
  });

  test('isOutcomeUnknown knows the code on errors that libraries rebuild from ours', () => {
    assert.equal(isOutcomeUnknown(Object.assign(new Error('rebuilt'), { code: 'PGL_OUTCOME_UNKNOWN' })), true);
    assert.equal(isOutcomeUnknown(Object.assign(new Error('rebuilt'), { code: 'PGL_COMMIT_OUTCOME_UNKNOWN' })), true);
    assert.equal(isOutcomeUnknown(Object.assign(new Error('rebuilt'), { code: 'PGL_CONNECTION_LOST' })), false);
    assert.equal(isOutcomeUnknown(null), false);
  });

  test("an idle session ended by the server names the server's timeout", async () => {
    await cluster.setSetting('idle_session_timeout', '300ms');
    // min 1 with no pings: the one connection is never closed for idleness, so the server ends it.
    const { pool } = makePool({ keepaliveIntervalMillis: 0, min: 1 });
    try {
      const evicted = new Promise<EvictionEvent>((resolve) => pool.on('evict', (e: EvictionEvent) => e.reason === 'died' && resolve(e)));
      await pool.query('SELECT 1');
      const event = await evicted;
      assert.equal(event.diagnosis?.cause, 'idle-timeout-server');
      assert.match(event.diagnosis?.summary ?? '', /idle_session_timeout is 300 ms/);
      assert.ok((event.diagnosis?.idleMillis ?? 0) >= 250, 'the idle time is how long it sat idle before dying');
    } finally {
      await pool.end();
      await cluster.resetSetting('idle_session_timeout');
    }
  });

  test('idle_session_timeout lowered after the pool read it: the first idle death makes it re-read and re-tune', async () => {
    const { pool } = makePool({ min: 1 });
    const tunings: Array<{ keepaliveIntervalMillis: number; reason: string }> = [];
    pool.on('tuned', (event: { keepaliveIntervalMillis: number; reason: string }) => tunings.push(event));
    try {
      await pool.query('SELECT 1');
      await cluster.setSetting('idle_session_timeout', '400ms');
      // A backend takes up a reloaded setting before its next command.
      await pool.query('SELECT 1');
      const event = await waitFor('the keepalive to be tuned', () => tunings[0]);
      assert.equal(event.keepaliveIntervalMillis, 200);
      assert.match(event.reason, /idle_session_timeout/);
      assert.ok(pool.stats().evictions.died >= 1, 'a session ended for idleness first');
    } finally {
      await pool.end();
      await cluster.resetSetting('idle_session_timeout');
    }
  });

  test('a statement past query_timeout is explained too', async () => {
    const { pool } = makePool({ query_timeout: 100 });
    try {
      const error = await pool.query('SELECT pg_sleep(5)').then(() => assert.fail('should fail'), (e: unknown) => e);
      assert.ok(error instanceof QueryTimeoutError);
      assert.equal(error.diagnosis.cause, 'network');
      assert.equal(error.diagnosis.host, `${cluster.host}:${cluster.port}`);
    } finally {
      await pool.end();
    }
  });
});

describe('learning a proxy idle timeout', () => {
  test('idle connections that keep dying silently at one age: the age is learned and keepalive tuned below it', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const { pool } = makePool({ host: proxy.host, port: proxy.port, max: 1 });
    const tuned: number[] = [];
    pool.on('tuned', (e: { keepaliveIntervalMillis: number }) => tuned.push(e.keepaliveIntervalMillis));
    const causes: string[] = [];
    pool.on('evict', (e: EvictionEvent) => causes.push(String(e.diagnosis?.cause)));
    const IDLE_KILL_MILLIS = 400;
    try {
      for (let round = 1; round <= 3; round++) {
        await pool.query('SELECT 1');
        // The test plays a proxy that cuts flows idle for 400 ms: no error message, just a reset.
        await new Promise((resolve) => setTimeout(resolve, IDLE_KILL_MILLIS));
        proxy.resetAll();
        await waitFor('the pool to drop it', () => pool.stats().evictions.died === round);
      }
      const learned = pool.stats().learnedIdleKillMillis ?? 0;
      assert.ok(learned >= IDLE_KILL_MILLIS && learned <= IDLE_KILL_MILLIS * 1.25, `learned ${learned}`);
      assert.equal(pool.stats().keepaliveIntervalMillis, Math.floor(learned / 2));
      assert.deepEqual(tuned, [Math.floor(learned / 2)]);
      assert.equal(causes.at(-1), 'idle-timeout-proxy-or-network', causes.join(','));
    } finally {
      await pool.end();
      await proxy.close();
    }
  });
});

describe('stats, events and logs', () => {
  test('checkout waits: the checkout event and the acquireWait percentiles', async () => {
    const { pool } = makePool({ max: 1 });
    const waits: number[] = [];
    pool.on('checkout', (e: { waitMillis: number; validated: boolean }) => waits.push(e.waitMillis));
    try {
      await Promise.all([1, 2, 3, 4].map(() => pool.query('SELECT pg_sleep(0.02)')));
      const wait = pool.stats().acquireWait;
      assert.equal(wait.count, 4);
      assert.equal(waits.length, 4);
      assert.ok(waits.filter((w) => w > 0).length >= 3, 'with max 1, the others waited');
      assert.ok(wait.maxMillis > 0 && wait.p99Millis >= wait.p50Millis, JSON.stringify(wait));
    } finally {
      await pool.end();
    }
  });

  test('validation is an event too', async () => {
    const { pool } = makePool({ validationWindowMillis: 0 });
    const probes: boolean[] = [];
    pool.on('validate', (e: { alive: boolean }) => probes.push(e.alive));
    try {
      await pool.query('SELECT 1');
      await pool.query('SELECT 1');
      // A window of 0 probes every checkout, the first one included.
      assert.deepEqual(probes, [true, true]);
      assert.equal(pool.stats().validations, 2);
    } finally {
      await pool.end();
    }
  });

  test('an outage and the recovery: events, and lastOutage in stats', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    await proxy.refuse();
    const { pool } = makePool({ host: proxy.host, port: proxy.port });
    const seen: string[] = [];
    pool.on('outage', () => seen.push('outage'));
    pool.on('recovered', () => seen.push('recovered'));
    try {
      const pending = pool.query('SELECT 1');
      await waitFor('a failed attempt', () => pool.stats().connectErrors > 0);
      await proxy.accept();
      await pending;
      assert.deepEqual(seen, ['outage', 'recovered']);
      assert.ok((pool.stats().lastOutage?.downMillis ?? 0) > 0);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('a pino-shaped logger gets fields first; nothing secret is logged', async () => {
    const lines: [Record<string, unknown>, string][] = [];
    const pino = { levels: { values: { info: 30 } }, debug: (fields: Record<string, unknown>, message: string) => lines.push([fields, message]) };
    const { pool } = makePool({ logger: pino });
    try {
      await pool.query({ text: 'SELECT $1::text AS secret_value', values: ['top-secret'] });
    } finally {
      await pool.end();
    }
    assert.ok(lines.some(([fields, message]) => message === 'opened a connection' && typeof fields['host'] === 'string'), JSON.stringify(lines));
    assert.ok(!JSON.stringify(lines).includes(cluster.password) && !JSON.stringify(lines).includes('top-secret'));
  });
});
