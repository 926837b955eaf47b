// pg.Pool's pool-lifecycle contract (issue 11), run against both pg.Pool and pg-lifeline's Pool
// with the same app code and the same assertions: shutdown drains queued work, protocol errors
// evict idle clients, idle deaths carry err.client, idle timeouts fire on time, connect-handler
// setup queries run before the caller's, and the small counting and event details match.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PoolEndedError } from '../src/index.js';
import { FaultProxy } from './harness/proxy.js';
import { ProtocolProxy, type InjectedMessage } from './harness/protocol-proxy.js';
import { waitFor } from './harness/wait.js';
import { bounded, implementations, nextEvent, useCluster, withPool, type Options } from './parity-shared.js';

const cluster = useCluster();
const MESSAGES: InjectedMessage[] = ['1', 'C', 'D', 'T', 'I', 's', 'G', 'd'];

// Unhandled rejections anywhere in this file fail the test that caused them.
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
before(() => process.on('unhandledRejection', onUnhandled));
after(() => process.off('unhandledRejection', onUnhandled));

for (const impl of implementations) {
  const isPg = impl.name === 'pg.Pool';
  describe(impl.name, { timeout: 60_000 }, () => {
    test('end() serves a query issued just before it, and refuses later ones', () =>
      withPool(impl, {}, async (pool) => {
        const q = pool.query('SELECT 1 AS one');
        await bounded(pool.end(), 'end()');
        assert.deepEqual((await q).rows, [{ one: 1 }]);
        const late = pool.query('SELECT 1');
        await assert.rejects(late);
        if (!isPg) await assert.rejects(late, (error) => error instanceof PoolEndedError);
      }));

    // Observed: pg.Pool 8.x leaves checkouts queued behind a full pool unserved once end() is called
    // (its queue pulse returns early while ending), so this one runs on pg-lifeline only.
    test('end() serves 20 queries and a queued connect() issued in a loop before it', { skip: isPg && 'pg.Pool hangs here' }, () =>
      withPool(impl, { max: 2 }, async (pool) => {
        const queries = Array.from({ length: 20 }, (_, i) => pool.query('SELECT $1::int AS i', [i]));
        const checkout = pool.connect();
        const ended = bounded(pool.end(), 'end()');
        const results = await Promise.all(queries);
        assert.deepEqual(results.map((r) => r.rows[0].i), Array.from({ length: 20 }, (_, i) => i));
        const client = await checkout;
        assert.deepEqual((await client.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
        client.release();
        await ended;
        assert.equal(pool.totalCount, 0);
        await assert.rejects(pool.connect());
      }));

    test('end() during a backend kill settles every query and stays bounded', () =>
      withPool(impl, { max: 3 }, async (pool, app) => {
        pool.on('error', () => undefined);
        await Promise.all([1, 2, 3].map(() => pool.query('SELECT 1')));
        const queries = Array.from({ length: 3 }, () => pool.query('SELECT pg_sleep(0.3)').then(() => 'ok', () => 'failed'));
        await waitFor('the sleeps to run', async () => (await cluster().backendPids(app)).length === 3);
        const ended = bounded(pool.end(), 'end()', 15_000);
        await cluster().terminateBackends(app);
        await ended;
        const outcomes = await bounded(Promise.all(queries), 'the queries', 15_000);
        assert.ok(outcomes.includes('failed'), 'the killed statements fail');
        assert.equal(pool.totalCount, 0);
      }));

    test('end() while the server is unreachable: waiters fail at their deadline, end() is bounded', async () => {
      const proxy = await FaultProxy.start(cluster().clientConfig());
      try {
        proxy.blackhole();
        const pool = impl.make({ ...cluster().clientConfig(), host: '127.0.0.1', port: proxy.port, connectionTimeoutMillis: 300, shutdownTimeoutMillis: 2000 } as Options);
        pool.on('error', () => undefined);
        const q = pool.query('SELECT 1').then(() => 'served', (error: unknown) => error);
        await bounded(pool.end(), 'end()', 10_000);
        assert.ok((await bounded(q, 'the query', 10_000)) instanceof Error);
        assert.equal(pool.totalCount, 0);
      } finally {
        await proxy.close();
      }
    });

    for (const message of MESSAGES) {
      test(`an idle client sent an out-of-order '${message}' is evicted with an error event`, async () => {
        const proxy = await ProtocolProxy.start(cluster().clientConfig());
        const pool = impl.make({ ...cluster().clientConfig(), host: '127.0.0.1', port: proxy.port, ssl: false } as Options);
        try {
          const errors: unknown[][] = [];
          pool.on('error', (...args: unknown[]) => void errors.push(args));
          await pool.query('SELECT 1');
          await waitFor('the client to be idle', () => pool.idleCount === 1);
          assert.equal(proxy.inject(message), 1);
          await waitFor('the error event', () => errors.length === 1);
          const [error, client] = errors[0]!;
          assert.ok(error instanceof Error);
          assert.ok(client instanceof pg.Client);
          assert.equal((error as { client?: unknown }).client, client);
          assert.equal(pool.idleCount, 0);
          assert.equal(pool.totalCount, 0);
          assert.deepEqual((await pool.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
        } finally {
          await bounded(pool.end(), 'end()');
          await proxy.close();
        }
      });
    }

    test("an idle client's death: the error event's err.client is the client", () =>
      withPool(impl, {}, async (pool, app) => {
        await pool.query('SELECT 1');
        const event = nextEvent(pool, 'error');
        await cluster().terminateBackends(app);
        const [error, client] = await bounded(event, 'the error event');
        assert.ok(client instanceof pg.Client);
        assert.equal((error as { client?: unknown }).client, client);
        await waitFor('the dead client to go', () => pool.totalCount === 0);
      }));

    test('client.end() on a checked-out client, then release(): totalCount drops at once', () =>
      withPool(impl, {}, async (pool) => {
        const client = await pool.connect();
        assert.equal(pool.totalCount, 1);
        const ending = client.end();
        client.release();
        assert.equal(pool.totalCount, 0);
        await ending;
        assert.deepEqual((await pool.query('SELECT 4 AS four')).rows, [{ four: 4 }]);
      }));

    test('idleTimeoutMillis: 10 closes an idle client soon after', () =>
      withPool(impl, { idleTimeoutMillis: 10 }, async (pool) => {
        const removed = nextEvent(pool, 'remove');
        await pool.query('SELECT 1');
        await bounded(removed, 'the idle client to close', 2_000);
        assert.equal(pool.totalCount, 0);
      }));

    test('allowExitOnIdle: the process exits once its clients are idle', async () => {
      const script = fileURLToPath(new URL('./fixtures/exit-on-idle.ts', import.meta.url));
      const child = spawn(process.execPath, ['--import', 'tsx', script, impl.name, JSON.stringify(cluster().clientConfig())], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      const code = await bounded(new Promise<number | null>((resolve) => child.on('exit', resolve)), 'the child to exit', 20_000).finally(() => {
        if (child.exitCode === null) child.kill();
      });
      assert.equal(code, 0);
      assert.equal(out.trim(), 'queried');
    });

    test("a connect-handler setup query runs before the caller's query, and end() leaves no rejection behind", () =>
      withPool(impl, { max: 8 }, async (pool) => {
        const before = unhandled.length;
        pool.on('connect', (client: pg.PoolClient) => void client.query("SET TIME ZONE 'UTC'"));
        // A fresh pool: every caller of the burst gets a new connection, its setup query still running.
        const burst = Array.from({ length: 8 }, () => pool.query<{ TimeZone: string }>('SHOW TIME ZONE'));
        await bounded(pool.end(), 'end()');
        const zones = await Promise.all(burst);
        assert.deepEqual(new Set(zones.map((r) => r.rows[0]!.TimeZone)), new Set(['UTC']));
        await new Promise((resolve) => setImmediate(resolve));
        assert.deepEqual(unhandled.slice(before), []);
      }));

    test('waitingCount leaves out callers for whom a connection is being opened', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const first = pool.connect();
        assert.equal(pool.waitingCount, 0);
        const second = pool.connect();
        assert.equal(pool.waitingCount, 1);
        const a = await first;
        a.release();
        const b = await second;
        assert.equal(pool.waitingCount, 0);
        b.release();
      }));

    test('pool.Promise and pool.log are the app’s', () => {
      const log = (): void => undefined;
      const pool = impl.make({ ...cluster().clientConfig(), Promise, log } as Options) as pg.Pool & { Promise: unknown; log: unknown };
      assert.equal(pool.Promise, Promise);
      assert.equal(pool.log, log);
      const plain = impl.make(cluster().clientConfig()) as pg.Pool & { Promise: unknown; log: unknown };
      assert.equal(plain.Promise, Promise);
      assert.equal(typeof plain.log, 'function');
      return Promise.all([pool.end(), plain.end()]).then(() => undefined);
    });

    test("the release event passes pg's first argument: null after pool.query, undefined after release()", () =>
      withPool(impl, {}, async (pool) => {
        const seen: unknown[] = [];
        pool.on('release', (error: unknown) => void seen.push(error));
        await pool.query('SELECT 1');
        const client = await pool.connect();
        client.release();
        assert.deepEqual(seen, [null, undefined]);
      }));
  });
}
