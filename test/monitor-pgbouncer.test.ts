// The monitor of statements in flight under default options where it is easiest to get wrong:
// minute-long statements on a healthy network (direct, behind PgBouncer, on a loaded server) are
// never touched, and behind PgBouncer, whose pids name no backend, a dead path is still found by
// reachability alone.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { OutcomeUnknownError, Pool } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { Bouncer, pgbouncerBinary } from './harness/pgbouncer.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

const noBouncer = !pgbouncerBinary() && 'pgbouncer is not installed (.ci/run installs it)';

let cluster: PgCluster;
before(async () => {
  cluster = await PgCluster.start();
});
after(() => cluster?.destroy());

describe('the monitor under default options', { skip: noBouncer, timeout: 180_000 }, () => {
  test('60 s statements are never interrupted: direct, behind PgBouncer, and while the server is loaded', async () => {
    const bouncer = await Bouncer.start(cluster, { poolMode: 'transaction' });
    const direct = new Pool({ ...cluster.clientConfig(), max: 2 });
    const pooled = new Pool({ ...bouncer.clientConfig(), max: 2 });
    const load = new Pool({ ...cluster.clientConfig(), max: 2, application_name: 'load' });
    let loading = true;
    // Two sessions keep the server's CPUs busy for as long as the sleeps run.
    const busy = Array.from({ length: 2 }, async () => {
      for (let round = 0; loading && round < 10_000; round++) await load.query('SELECT sum(g) FROM generate_series(1, 300000) AS g');
    });
    try {
      const sleeps = [
        direct.query('SELECT pg_sleep(60), 1 AS n'),
        pooled.query('SELECT pg_sleep(60), 2 AS n'),
      ];
      const results = await Promise.all(sleeps);
      assert.deepEqual(results.map((r) => r.rows[0]?.n), [1, 2]);
      for (const pool of [direct, pooled]) {
        const { monitor } = pool.stats();
        assert.ok(monitor.checks > 0, 'the monitor looked at the statement');
        assert.equal(monitor.cutOff, 0);
        assert.equal(monitor.hostsDown, 0);
      }
    } finally {
      loading = false;
      await Promise.all(busy);
      await Promise.all([direct.end(), pooled.end(), load.end()]);
      await bouncer.destroy();
    }
  });

  test('behind PgBouncer a blackholed path is found by reachability, and the pool recovers', async () => {
    const bouncer = await Bouncer.start(cluster, { poolMode: 'transaction' });
    const proxy = await FaultProxy.start(bouncer.clientConfig());
    const pool = new Pool({ ...bouncer.clientConfig(), host: proxy.host, port: proxy.port, max: 2 });
    const downs: unknown[] = [];
    pool.on('hostDown', (event) => downs.push(event));
    try {
      await pool.query('SELECT 1');
      const pending = pool.query('SELECT pg_sleep(2)').then(() => 'settled', (error: unknown) => error);
      await waitFor('the statement to be in flight', () => pool.idleCount === 0);
      proxy.blackhole();
      const outcome = await pending;
      assert.ok(outcome instanceof OutcomeUnknownError, `expected OutcomeUnknownError, got ${String(outcome)}`);
      assert.match(outcome.diagnosis.summary, /did not answer a monitor connection/);
      assert.equal(downs.length, 1);
      proxy.passThrough();
      assert.deepEqual((await pool.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
    } finally {
      await pool.end();
      await proxy.close();
      await bouncer.destroy();
    }
  });
});
