// Parity: pg.Pool's documented behaviours (node-postgres.com/apis/pool), run against both pg.Pool
// and pg-lifeline's Pool. Where pg-lifeline deliberately differs, the shared body asserts each
// side's own behaviour and says so with a `// deliberate difference:` comment. More in
// parity-extra.test.ts (submittables, dying backends, child processes, hooks, transactions).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { waitFor } from './harness/wait.js';
import { backendPid, bounded, implementations, nextEvent, pid, useCluster, withPool } from './parity-shared.js';

const cluster = useCluster();

for (const impl of implementations) {
  const isPg = impl.name === 'pg.Pool';
  describe(impl.name, { timeout: 30_000 }, () => {
    test('is a pg.Pool and exposes its options', () => {
      const pool = impl.make({ ...cluster().clientConfig(), max: 7 });
      assert.ok(pool instanceof pg.Pool);
      assert.equal(pool.options.max, 7);
      assert.equal(pool.options.idleTimeoutMillis, 10_000);
      assert.equal(pool.options.maxUses, Infinity);
      if (isPg) {
        pool.options.max = 8;
        assert.equal(pool.options.max, 8);
      } else {
        // deliberate difference: pg-lifeline's options are frozen, so assigning throws (ESM is strict).
        assert.throws(() => (pool.options.max = 8), TypeError);
        assert.equal(pool.options.max, 7);
      }
      return pool.end(); // never connected: ends at once
    });

    test('query(): text, values, config, rowMode array and callback forms', () =>
      withPool(impl, {}, async (pool) => {
        assert.deepEqual((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
        assert.deepEqual((await pool.query('SELECT $1::int + 1 AS n', [41])).rows, [{ n: 42 }]);
        assert.deepEqual((await pool.query({ text: 'SELECT $1::text AS s', values: ['hi'] })).rows, [{ s: 'hi' }]);
        const arrays = await pool.query({ text: 'SELECT $1::int AS a, $2::text AS b', values: [1, 'x'], rowMode: 'array' });
        assert.deepEqual(arrays.rows, [[1, 'x']]);
        assert.deepEqual(arrays.fields.map((f) => f.name), ['a', 'b']);
        const viaCallback = (...args: unknown[]) =>
          new Promise<{ returned: unknown; rows: unknown[] }>((resolve, reject) => {
            let returned: unknown = 'not yet';
            returned = (pool.query as (...a: unknown[]) => unknown)(...args, (err: Error | undefined, res: pg.QueryResult) =>
              err ? reject(err) : resolve({ returned, rows: res.rows }),
            );
          });
        assert.deepEqual(await viaCallback('SELECT 2 AS two'), { returned: undefined, rows: [{ two: 2 }] });
        assert.deepEqual(await viaCallback('SELECT $1::int AS three', [3]), { returned: undefined, rows: [{ three: 3 }] });
      }));

    test('connect(): promise form with release(), callback form with done()', () =>
      withPool(impl, {}, async (pool) => {
        const client = await pool.connect();
        assert.equal(typeof client.release, 'function');
        assert.equal(pool.idleCount, 0);
        client.release();
        assert.equal(pool.idleCount, 1);
        const { client: cbClient, done } = await new Promise<{ client: pg.PoolClient; done: (e?: Error | boolean) => void }>((resolve, reject) =>
          pool.connect((err, c, d) => (err ? reject(err) : resolve({ client: c!, done: d }))),
        );
        assert.deepEqual((await cbClient.query('SELECT 5 AS five')).rows, [{ five: 5 }]);
        assert.equal(pid(cbClient), pid(client));
        assert.equal(pool.idleCount, 0);
        done();
        assert.equal(pool.idleCount, 1);
        assert.throws(() => done(), /already been released/);
        if (isPg) assert.deepEqual((await cbClient.query('SELECT 6 AS six')).rows, [{ six: 6 }]);
        else {
          // deliberate difference: pg-lifeline refuses queries on a client after its release().
          await assert.rejects(cbClient.query('SELECT 6 AS six'), { code: 'PGL_CLIENT_RELEASED' });
        }
      }));

    test('totalCount, idleCount and waitingCount', () =>
      withPool(impl, { max: 3 }, async (pool) => {
        await Promise.all([1, 2, 3].map(() => pool.query('SELECT pg_sleep(0.02)')));
        assert.deepEqual([pool.totalCount, pool.idleCount, pool.waitingCount], [3, 3, 0]);
        const clients = await Promise.all([1, 2, 3].map(() => pool.connect()));
        assert.equal(pool.idleCount, 0);
        const pending = pool.connect();
        await waitFor('a waiting checkout', () => pool.waitingCount === 1);
        clients[0]!.release();
        const served = await pending;
        assert.equal(pid(served), pid(clients[0]));
        assert.deepEqual([pool.totalCount, pool.waitingCount], [3, 0]);
        for (const c of [served, clients[1]!, clients[2]!]) c.release();
        assert.equal(pool.idleCount, 3);
      }));

    test('max is never exceeded under 3x max concurrent queries', () =>
      withPool(impl, { max: 3 }, async (pool, app) => {
        let peak = 0;
        pool.on('acquire', () => (peak = Math.max(peak, pool.totalCount)));
        const sql = 'SELECT pg_backend_pid() AS pid, (SELECT count(*)::int FROM pg_stat_activity WHERE application_name = $1) AS n, pg_sleep(0.02)';
        const results = await Promise.all(Array.from({ length: 9 }, () => pool.query<{ pid: number; n: number }>(sql, [app])));
        assert.ok(results.every((r) => r.rows[0]!.n <= 3), `sessions seen: ${results.map((r) => r.rows[0]!.n)}`);
        assert.ok(new Set(results.map((r) => r.rows[0]!.pid)).size <= 3);
        assert.equal(peak, 3);
        assert.equal(pool.totalCount, 3);
      }));

    test('events: connect, acquire, release (err, client), remove', () =>
      withPool(impl, {}, async (pool) => {
        const seen: string[] = [];
        const releases: Array<[unknown, number]> = [];
        pool.on('connect', (c) => seen.push(`connect ${pid(c)}`));
        pool.on('acquire', (c) => seen.push(`acquire ${pid(c)}`));
        pool.on('release', (err: unknown, c: unknown) => releases.push([err, pid(c)]));
        const client = await pool.connect();
        const p = pid(client);
        client.release();
        const again = await pool.connect();
        assert.deepEqual(seen, [`connect ${p}`, `acquire ${p}`, `acquire ${p}`]);
        const removed = nextEvent(pool, 'remove');
        again.release(true);
        assert.equal(pid((await removed)[0]), p);
        assert.deepEqual(releases, [[undefined, p], [true, p]]);
        assert.equal(pool.totalCount, 0);
      }));

    test('event clients and the object connect() returned', () =>
      withPool(impl, {}, async (pool) => {
        const fromEvents: unknown[] = [];
        for (const event of ['connect', 'acquire'] as const) pool.on(event, (c) => fromEvents.push(c));
        pool.on('release', (_err: unknown, c: unknown) => fromEvents.push(c));
        const client = await pool.connect();
        client.release();
        assert.equal(fromEvents.length, 3);
        // deliberate difference: pg-lifeline's connect() returns a per-checkout handle (so a stale
        // one can be refused); events carry the underlying pg.Client, which the handle wraps.
        for (const c of fromEvents) {
          if (isPg) assert.equal(c, client);
          else assert.notEqual(c, client);
          assert.equal(pid(c as pg.PoolClient), pid(client));
        }
      }));

    test('release(error) and release(true) destroy the client', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const first = await pool.connect();
        const p1 = pid(first);
        first.release(new Error('x'));
        const second = await pool.connect();
        const p2 = pid(second);
        assert.notEqual(p2, p1);
        second.release(true);
        assert.notEqual(await backendPid(pool), p2);
      }));

    test('idleTimeoutMillis removes idle clients', () =>
      withPool(impl, { idleTimeoutMillis: 100 }, async (pool, app) => {
        const removed = nextEvent(pool, 'remove');
        const p = await backendPid(pool);
        assert.equal(pid((await removed)[0]), p);
        assert.deepEqual([pool.totalCount, pool.idleCount], [0, 0]);
        await waitFor('the backend to go away', async () => (await cluster().backendPids(app)).length === 0);
      }));

    test('maxUses retires a client after that many checkouts', () =>
      withPool(impl, { max: 1, maxUses: 2 }, async (pool) => {
        const pids: number[] = [];
        for (let i = 0; i < 3; i++) {
          const client = await pool.connect();
          pids.push(pid(client));
          client.release();
        }
        assert.equal(pids[0], pids[1]);
        assert.notEqual(pids[2], pids[1]);
      }));

    test('end(): ending, ended, use after end, end twice, end(cb)', async () => {
      const pool = impl.make({ ...cluster().clientConfig(), application_name: `parity-own-${process.pid}-${Date.now()}` });
      const client = await pool.connect();
      let released = false;
      try {
        const ending = pool.end();
        assert.equal(pool.ending, true);
        assert.equal(pool.ended, false); // a client is still checked out
        await assert.rejects(pool.connect());
        await assert.rejects(pool.query('SELECT 1'));
        client.release();
        released = true;
        await bounded(ending, 'end()');
      } finally {
        if (!released) client.release();
      }
      assert.equal(pool.ended, true);
      await assert.rejects(pool.connect(), /Cannot use a pool after calling end on the pool/);
      await assert.rejects(pool.query('SELECT 1'), /Cannot use a pool after calling end on the pool/);
      await assert.rejects(pool.end(), /more than once/);
      const other = impl.make({ ...cluster().clientConfig(), application_name: `parity-own-${process.pid}-${Date.now()}` });
      await other.query('SELECT 1');
      const err = await new Promise((resolve) => (other.end as (cb: (err?: Error) => void) => void)(resolve));
      assert.equal(err, undefined);
      assert.equal(other.ended, true);
    });

    test('query(fn) reports an error through fn and returns nothing', () =>
      withPool(impl, {}, async (pool) => {
        let returned: unknown = 'not called';
        const err = await new Promise<Error>((resolve) => {
          returned = (pool.query as unknown as (cb: (e: Error) => void) => unknown)(resolve);
        });
        assert.match(err.message, /Passing a function as the first parameter to pool.query is not supported/);
        assert.equal(returned, undefined);
      }));

    test('a syntax error rejects with 42601; pg.Pool discards the client, pg-lifeline keeps it', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const before = await backendPid(pool);
        const released = nextEvent(pool, 'release');
        await assert.rejects(pool.query('SELEC 1'), { code: '42601' });
        const [releaseErr] = await released;
        const afterPid = await backendPid(pool);
        if (isPg) {
          assert.equal((releaseErr as { code?: string }).code, '42601');
          assert.notEqual(afterPid, before);
        } else {
          // deliberate difference: an ordinary SQL error does not cost pg-lifeline the connection.
          assert.equal(releaseErr, undefined);
          assert.equal(afterPid, before);
        }
      }));

    test('a unique violation rejects with 23505', () =>
      withPool(impl, {}, async (pool) => {
        const sql = 'CREATE TEMP TABLE parity_u (x int PRIMARY KEY); INSERT INTO parity_u VALUES (1), (1)';
        await assert.rejects(pool.query(sql), { code: '23505' });
        await assert.rejects(pool.query(sql), { code: '23505' }); // the failed statement left nothing behind
      }));

    test('a server that refuses connections', () =>
      // Port 1: nothing listens there, so every connection attempt is refused.
      withPool(impl, { port: 1, connectionTimeoutMillis: 300 }, async (pool) => {
        const err = (await pool.query('SELECT 1').then(
          () => assert.fail('the query should have failed'),
          (e: unknown) => e,
        )) as Error & { code?: string; lifelineCode?: string; reason?: string; cause?: { code?: string } };
        assert.equal(err.code, 'ECONNREFUSED');
        if (!isPg) {
          // deliberate difference: pg-lifeline retries until connectionTimeoutMillis, then rejects with a typed
          // AcquireTimeoutError whose cause is the last connect error (and whose code is that error's).
          assert.equal(err.lifelineCode, 'PGL_ACQUIRE_TIMEOUT');
          assert.equal(err.reason, 'unreachable');
          assert.equal(err.cause?.code, 'ECONNREFUSED');
        }
        // pg-lifeline may still have its last attempt in flight at the deadline; it leaves nothing behind.
        await waitFor('no connection left', () => pool.totalCount === 0);
      }));

    test('connectionTimeoutMillis when the pool is exhausted', () =>
      // Long enough for the first connection to open on a loaded machine.
      withPool(impl, { max: 1, connectionTimeoutMillis: 1000 }, async (pool) => {
        const held = await pool.connect();
        try {
          const err = (await pool.connect().then(
            () => assert.fail('connect() should have timed out'),
            (e: unknown) => e,
          )) as Error & { code?: string; reason?: string };
          assert.ok(err instanceof Error);
          assert.match(err.message, /^timeout exceeded when trying to connect/);
          if (!isPg) {
            // deliberate difference: pg-lifeline rejects with a typed AcquireTimeoutError.
            assert.equal(err.code, 'PGL_ACQUIRE_TIMEOUT');
            assert.equal(err.reason, 'exhausted');
          }
          assert.equal(pool.waitingCount, 0);
        } finally {
          held.release();
        }
      }));
  });
}
