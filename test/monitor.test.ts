import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ConnectionLostError, OutcomeUnknownError, Pool, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
before(async () => {
  cluster = await PgCluster.start();
});
after(async () => {
  await cluster.destroy();
});

// Minute-long statements, PgBouncer and a loaded server: test/monitor-pgbouncer.test.ts.
// Default monitoring options throughout: the point is that they bound a dead network by themselves.
function proxiedPool(proxy: FaultProxy, options: PoolOptions = {}): Pool {
  return new Pool({ ...cluster.clientConfig(), host: proxy.host, port: proxy.port, ...options });
}

describe('statements in flight on a dead network', () => {
  test('a blackhole: every statement settles, the host is declared down, idempotent reads succeed after', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const app = 'monitor-blackhole';
    const pool = proxiedPool(proxy, { max: 4, application_name: app });
    const downs: unknown[] = [];
    pool.on('hostDown', (event) => downs.push(event));
    try {
      // Four open connections first, so no statement below waits on a connect that the blackhole would swallow.
      const held = await Promise.all(Array.from({ length: 4 }, () => pool.connect()));
      for (const client of held) client.release();
      const started = pool.query('SELECT pg_sleep(2)');
      const writes = Array.from({ length: 3 }, () => pool.query('SELECT pg_sleep(2), 1 AS n').then(() => 'settled', (error: unknown) => error));
      await waitFor('all four statements running on the server', async () =>
        (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).length === 4);
      proxy.blackhole();
      const first = await started.then(() => 'settled', (error: unknown) => error);
      assert.ok(first instanceof OutcomeUnknownError, `expected OutcomeUnknownError, got ${String(first)}`);
      assert.match(first.diagnosis.summary, /did not answer a monitor connection/);
      // Each settles: cut off in flight (unknown), or never sent (not applied), or run after all.
      for (const outcome of await Promise.all(writes)) assert.ok(outcome === 'settled' || outcome instanceof ConnectionLostError, String(outcome));
      assert.equal(downs.length >= 1, true);
      assert.ok(pool.stats().monitor.hostsDown >= 1);
      const read = pool.query<{ n: number }>({ text: 'SELECT 42 AS n', idempotent: true } as never);
      proxy.passThrough();
      assert.equal((await read).rows[0]?.n, 42);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('a backend killed while its notice cannot arrive: the monitor finds it gone', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const app = 'monitor-killed-dark';
    const pool = proxiedPool(proxy, { max: 1, application_name: app });
    try {
      await pool.query('SELECT 1');
      const pending = pool.query('SELECT pg_sleep(30)').then(() => 'settled', (error: unknown) => error);
      await waitFor('the sleep to run', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'`, [app])).length === 1);
      // The path goes dark first, so the server's goodbye (57P01 and the close) never reaches the pool.
      proxy.darkenExisting();
      assert.equal(await cluster.terminateBackends(app), 1);
      const outcome = await pending;
      assert.ok(outcome instanceof OutcomeUnknownError, `expected OutcomeUnknownError, got ${String(outcome)}`);
      assert.match(outcome.diagnosis.summary, /no longer has that backend/);
      assert.equal(pool.stats().monitor.hostsDown, 0);
      assert.equal((await pool.query('SELECT 8 AS n')).rows[0]?.n, 8);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('a path gone dark while the server stays reachable: the lost reply is found through the monitor', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const pool = proxiedPool(proxy, { max: 1 });
    try {
      await pool.query('SELECT 1');
      const pending = pool.query('SELECT pg_sleep(0.5)').then(() => 'settled', (error: unknown) => error);
      await waitFor('the statement to be in flight', () => pool.idleCount === 0);
      proxy.darkenExisting();
      const outcome = await pending;
      assert.ok(outcome instanceof OutcomeUnknownError, `expected OutcomeUnknownError, got ${String(outcome)}`);
      assert.match(outcome.diagnosis.summary, /reply never arrived|no longer has that backend/);
      assert.equal(pool.stats().monitor.hostsDown, 0);
      assert.equal((await pool.query('SELECT 7 AS n')).rows[0]?.n, 7);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });
});
