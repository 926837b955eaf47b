// A checked-out client behaves as pg.Pool's does, run against both pg.Pool and pg-lifeline's Pool
// with the same app code: release() while a statement runs lets it finish, node-postgres's own
// getClient() helper (assigning query and release) works, every query() form returns what pg
// returns, and EventEmitter methods return the handle the app holds.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import QueryStream from 'pg-query-stream';
import { ClientReleasedError, type Pool } from '../src/index.js';
import { waitFor } from './harness/wait.js';
import { bounded, implementations, pid, useCluster, withPool } from './parity-shared.js';

// pg-cursor ships no types; a non-literal specifier keeps tsc from looking for them.
interface CursorLike extends pg.Submittable {
  read(rows: number): Promise<unknown[]>;
  close(): Promise<void>;
}
const { default: Cursor } = (await import('pg-cursor' as string)) as { default: new (text: string) => CursorLike };

const cluster = useCluster();

// Unhandled rejections anywhere in this file fail the test that caused them.
const unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
before(() => process.on('unhandledRejection', onUnhandled));
after(() => process.off('unhandledRejection', onUnhandled));

/** Lets a rejection nobody handled be reported, then asserts there was none. */
async function assertNoUnhandledRejection(): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(unhandled, []);
}

type AppClient = pg.PoolClient & { lastQuery?: unknown[] };
type AnyFunction = (...args: unknown[]) => unknown;

// node-postgres's getClient() helper (docs, "Project structure"), word for word but for types.
const getClient = async (pool: pg.Pool): Promise<AppClient> => {
  const client: AppClient = await pool.connect();
  const query = client.query;
  const release = client.release;
  const timeout = setTimeout(() => {
    console.error('A client has been checked out for more than 5 seconds!');
  }, 5000);
  client.query = ((...args: unknown[]) => {
    client.lastQuery = args;
    return (query as unknown as AnyFunction).apply(client, args);
  }) as typeof client.query;
  client.release = () => {
    clearTimeout(timeout);
    client.query = query;
    client.release = release;
    return release.apply(client);
  };
  return client;
};

/** Runs `fn(callback)` and resolves with what the callback got, checking `fn` returned undefined. */
function viaCallback(fn: (callback: (error: Error | null, result: pg.QueryResult) => void) => unknown): Promise<{ error: Error | null; rows: unknown[] | undefined }> {
  return new Promise((resolve) => {
    const returned = fn((error, result) => resolve({ error, rows: result?.rows }));
    assert.equal(returned, undefined, 'pg returns undefined when given a callback');
  });
}

for (const impl of implementations) {
  const isPg = impl.name === 'pg.Pool';
  describe(impl.name, { timeout: 60_000 }, () => {
    test('release() while queries run: they finish with their results, nothing rejects unhandled', () =>
      withPool(impl, {}, async (pool) => {
        const client = await pool.connect();
        // Nobody holds this promise: a rejection of it would crash an app.
        client.query('SELECT NOW()');
        const held = client.query('SELECT n FROM (SELECT 42 AS n) t, pg_sleep(0.2)');
        client.release();
        assert.deepEqual((await bounded(held, 'the statement released while running')).rows, [{ n: 42 }]);
        assert.deepEqual((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
        await assertNoUnhandledRejection();
      }));

    test('release() with a transaction running: its statements finish, the next user gets no open transaction', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const client = await pool.connect();
        const statements = [client.query('BEGIN'), client.query('SELECT pg_sleep(0.1)'), client.query('SELECT 7 AS n')];
        client.release();
        const results = await bounded(Promise.all(statements), 'the statements');
        assert.deepEqual(results[2]?.rows, [{ n: 7 }]);
        const next = await pool.connect();
        try {
          const { rows } = await next.query('SELECT 1 AS one');
          assert.deepEqual(rows, [{ one: 1 }]);
          // pg.Pool hands the open transaction on; pg-lifeline rolls it back first.
          if (!isPg) assert.deepEqual((await next.query('SELECT txid_current_if_assigned() AS x')).rows, [{ x: null }]);
        } finally {
          next.release();
        }
        await assertNoUnhandledRejection();
      }));

    test('release(err) while a query runs destroys the connection, and the query fails', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const client = await pool.connect();
        const abandoned = pid(client);
        const running = client.query('SELECT pg_sleep(0.2)').then(() => 'succeeded', (error: unknown) => error);
        client.release(new Error('the app gave up on this client'));
        assert.ok((await bounded(running, 'the destroyed statement')) instanceof Error);
        const next = await pool.connect();
        try {
          assert.notEqual(pid(next), abandoned);
          assert.deepEqual((await next.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
        } finally {
          next.release();
        }
        await assertNoUnhandledRejection();
      }));

    test("node-postgres's getClient() helper: the app's query and release run, nothing reaches the next holder", () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const client = await getClient(pool);
        const backend = pid(client);
        const wrapped = client.query;
        assert.deepEqual((await client.query('SELECT $1::int AS n', [7])).rows, [{ n: 7 }]);
        assert.deepEqual(client.lastQuery, ['SELECT $1::int AS n', [7]]);
        assert.equal(client.query, wrapped);
        client.release();
        // The app's release ran: it put the original query back.
        assert.notEqual(client.query, wrapped);
        assert.deepEqual((await pool.query('SELECT 2 AS two')).rows, [{ two: 2 }]);

        const again = await getClient(pool);
        assert.equal(pid(again), backend);
        assert.deepEqual((await again.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
        again.release();

        const fresh: AppClient = await pool.connect();
        try {
          assert.equal(pid(fresh), backend);
          assert.notEqual(fresh.query, wrapped);
          assert.deepEqual((await fresh.query('SELECT 4 AS four')).rows, [{ four: 4 }]);
          // pg keeps what the app set on its one client object; each pg-lifeline checkout starts plain.
          if (!isPg) assert.equal(fresh.lastQuery, undefined);
        } finally {
          fresh.release();
        }
        assert.deepEqual((await pool.query('SELECT 5 AS five')).rows, [{ five: 5 }]);
      }));

    test('query() with a callback returns undefined; Submittables are returned as given', () =>
      withPool(impl, {}, async (pool) => {
        const client = await pool.connect();
        try {
          const callback = (): void => undefined;
          const config = { text: 'SELECT 1 AS n', callback };
          const inConfig = await viaCallback((done) => client.query({ ...config, callback: done } as pg.QueryConfig));
          assert.deepEqual(inConfig, { error: null, rows: [{ n: 1 }] });
          const configError = await viaCallback((done) => client.query({ text: 'SELECT 1 / 0', callback: done } as pg.QueryConfig));
          assert.equal((configError.error as { code?: string } | null)?.code, '22012');
          // The app's config object is not changed.
          const kept = await viaCallback((done) => client.query({ text: config.text, callback: done } as pg.QueryConfig, []));
          assert.deepEqual(kept.rows, [{ n: 1 }]);
          assert.equal(config.callback, callback);

          assert.deepEqual(await viaCallback((done) => client.query('SELECT $1::int AS n', [2], done)), { error: null, rows: [{ n: 2 }] });
          assert.deepEqual(await viaCallback((done) => client.query('SELECT 3 AS n', done)), { error: null, rows: [{ n: 3 }] });
          const textError = await viaCallback((done) => client.query('SELECT 1 / 0', done));
          assert.equal((textError.error as { code?: string } | null)?.code, '22012');

          const query = new pg.Query('SELECT generate_series(1, 3) AS n');
          const rows: unknown[] = [];
          query.on('row', (row: unknown) => void rows.push(row));
          const ended = new Promise((resolve, reject) => query.once('end', resolve).once('error', reject));
          assert.equal(client.query(query), query);
          await bounded(ended, 'the pg.Query');
          assert.deepEqual(rows, [{ n: 1 }, { n: 2 }, { n: 3 }]);

          const cursor = new Cursor('SELECT generate_series(1, 3) AS n');
          assert.equal(client.query(cursor), cursor);
          assert.deepEqual(await cursor.read(10), [{ n: 1 }, { n: 2 }, { n: 3 }]);
          await cursor.close();

          const stream = new QueryStream('SELECT generate_series(1, 2) AS n');
          assert.equal(client.query(stream), stream);
          const streamed: unknown[] = [];
          for await (const row of stream) streamed.push(row);
          assert.deepEqual(streamed, [{ n: 1 }, { n: 2 }]);
        } finally {
          client.release();
        }
      }));

    test('on, once, off, addListener, removeListener return the client the app holds', () =>
      withPool(impl, {}, async (pool) => {
        const client = await pool.connect();
        try {
          const before = client.listenerCount('notice');
          const notices: string[] = [];
          const listener = (notice: { message?: string | undefined }): void => void notices.push(notice.message ?? '');
          const ignore = (): void => undefined;
          assert.equal(client.on('notice', listener), client);
          assert.equal(client.addListener('notice', ignore), client);
          assert.equal(client.once('notification', ignore), client);
          assert.equal(client.prependListener('notice', ignore), client);
          // Chained, as an EventEmitter allows: still the handle that can be released.
          assert.equal(typeof client.on('notice', ignore).release, 'function');
          assert.equal(client.listenerCount('notice'), before + 4);
          await client.query("DO $$ BEGIN RAISE NOTICE 'hello'; END $$");
          assert.deepEqual(notices, ['hello']);
          assert.equal(client.off('notice', listener), client);
          assert.equal(client.removeListener('notice', ignore), client);
          assert.equal(client.removeListener('notice', ignore).removeListener('notice', ignore), client);
          assert.equal(client.removeListener('notification', ignore), client);
          assert.equal(client.listenerCount('notice'), before);
          assert.equal(client.on, client.on);
        } finally {
          client.release();
        }
      }));
  });
}

// Where pg.Pool has no answer to match (it hands the client on at once, and keeps assignments on
// its one client object), pg-lifeline's own contract.
const lifeline = implementations.find((impl) => impl.name === 'pg-lifeline');

function withLifeline(options: Record<string, unknown>, body: (pool: Pool, app: string) => Promise<void>): Promise<void> {
  if (lifeline === undefined) throw new Error('pg-lifeline is one of the implementations');
  return withPool(lifeline, options, (pool, app) => body(pool as unknown as Pool, app));
}

/** Holds advisory lock 7 on a session of its own while `fn` runs; `unlock` lets it go early. */
async function withLock(fn: (unlock: () => Promise<void>) => Promise<void>): Promise<void> {
  const holder = new pg.Client(cluster().clientConfig());
  await holder.connect();
  try {
    await holder.query('SELECT pg_advisory_lock(7)');
    await fn(async () => void (await holder.query('SELECT pg_advisory_unlock(7)')));
  } finally {
    await holder.end();
  }
}

describe('pg-lifeline: statements running at release', () => {
  test('a connection due to retire goes once the statement running at release has finished', async () => {
    await withLifeline({ maxUses: 1 }, async (pool) => {
      const client = await pool.connect();
      const running = client.query('SELECT 7 AS n FROM pg_sleep(0.1)');
      client.release();
      assert.deepEqual((await running).rows, [{ n: 7 }]);
      await waitFor('the connection to retire', () => pool.stats().evictions['max-uses'] === 1);
      assert.equal(pool.stats().evictions['query-in-flight'], 0);
    });
  });

  test('a connection that dies under a statement running at release is closed, not handed on', async () => {
    await withLock(async () => {
      await withLifeline({ max: 1 }, async (pool, app) => {
        const client = await pool.connect();
        const killed = pid(client);
        const blocked = client.query('SELECT 42 AS n FROM pg_advisory_xact_lock(7)').then(() => 'succeeded', (error: unknown) => error);
        client.release();
        const checkout = pool.connect();
        await waitFor('the statement to wait on the lock', async () => (await cluster().backendPids(app)).length === 1);
        await cluster().terminateBackends(app);
        assert.ok((await bounded(blocked, 'the killed statement')) instanceof Error);
        const next = await bounded(checkout, 'the next checkout');
        try {
          assert.notEqual(pid(next), killed);
          assert.deepEqual((await next.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
        } finally {
          next.release();
        }
        assert.equal(pool.stats().evictions.died, 1);
      });
    });
    await assertNoUnhandledRejection();
  });

  test('end() waits for a statement running at release, and cuts it at shutdownTimeoutMillis', async () => {
    await withLock(async (unlock) => {
      await withLifeline({}, async (pool) => {
        const client = await pool.connect();
        const blocked = client.query('SELECT 42 AS n FROM pg_advisory_xact_lock(7)');
        client.release();
        let ended = false;
        const ending = pool.end().then(() => {
          ended = true;
        });
        await cluster().query('SELECT 1');
        assert.equal(ended, false);
        await unlock();
        assert.deepEqual((await blocked).rows, [{ n: 42 }]);
        await ending;
        assert.equal(pool.stats().evictions['pool-ended'], 1);
      });
    });
    await withLock(async () => {
      await withLifeline({ shutdownTimeoutMillis: 200 }, async (pool) => {
        const client = await pool.connect();
        const blocked = client.query('SELECT 42 AS n FROM pg_advisory_xact_lock(7)').then(() => 'succeeded', (error: unknown) => error);
        client.release();
        await pool.end();
        assert.ok((await blocked) instanceof Error);
        assert.equal(pool.stats().evictions['shutdown-timeout'], 1);
      });
    });
  });
});

describe('pg-lifeline: assignments to a checked-out client', () => {
  test('stay on that handle: pg\'s client and the next holder never see them', async () => {
    await withLifeline({ max: 1 }, async (pool) => {
      let raw: pg.Client | undefined;
      pool.on('release', (_error: unknown, client: pg.Client) => {
        raw = client;
      });
      const client = (await pool.connect()) as pg.PoolClient & { lastQuery?: unknown };
      const original = client.query;
      const calls: unknown[][] = [];
      client.query = ((...args: unknown[]) => {
        calls.push(args);
        return (original as unknown as (...a: unknown[]) => unknown).apply(client, args);
      }) as typeof client.query;
      client.lastQuery = 'SELECT 1';
      assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      assert.deepEqual(calls, [['SELECT 1 AS one']]);
      assert.ok('lastQuery' in client);
      assert.ok(Object.keys(client).includes('lastQuery'));
      assert.equal({ ...client }.lastQuery, 'SELECT 1');
      delete client.lastQuery;
      assert.equal(client.lastQuery, undefined);
      client.lastQuery = 'again';
      // Not restored before release: a pg client would keep them, the next checkout does not.
      client.release();
      // The stale handle still runs the app's wrapper, and what it wraps refuses.
      await assert.rejects(client.query('SELECT 1'), ClientReleasedError);
      assert.equal(calls.length, 2);

      const next = (await pool.connect()) as pg.PoolClient & { lastQuery?: unknown };
      try {
        assert.equal(next.lastQuery, undefined);
        assert.ok(!('lastQuery' in next));
        assert.deepEqual((await next.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
        assert.equal(calls.length, 2);
      } finally {
        next.release();
      }
      assert.ok(raw !== undefined);
      assert.equal(Object.hasOwn(raw, 'lastQuery'), false);
      assert.equal(raw.query, pg.Client.prototype.query);
      assert.deepEqual((await pool.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
    });
  });
});
