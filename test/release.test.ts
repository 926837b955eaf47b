// Giving connections back: dirty sessions, stale handles, withClient/transaction, and acquire failures.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import pg from 'pg';
import {
  AbortedError,
  AcquireTimeoutError,
  ClientReleasedError,
  ConfigError,
  DoubleReleaseError,
  Pool,
  TransactionRolledBackError,
  type EvictionEvent,
  type PoolOptions,
} from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;

before(async () => {
  cluster = await PgCluster.start();
  await cluster.query('CREATE TABLE items (id int PRIMARY KEY, label text)');
});

after(async () => {
  await cluster?.destroy();
});

let poolSeq = 0;
/** Runs `fn` with a fresh pool (own application_name) and always ends it. */
async function withPool(options: PoolOptions, fn: (pool: Pool, app: string) => Promise<void>): Promise<void> {
  const app = `release-${++poolSeq}`;
  const pool = new Pool({ ...cluster.clientConfig(), application_name: app, ...options });
  try {
    await fn(pool, app);
  } finally {
    if (!pool.ending) await pool.end();
  }
}

/** Holds advisory lock 7 on a session of its own while `fn` runs; `unlock` lets it go early. */
async function withLock(fn: (unlock: () => Promise<void>) => Promise<void>): Promise<void> {
  const holder = new pg.Client(cluster.clientConfig());
  await holder.connect();
  try {
    await holder.query('SELECT pg_advisory_lock(7)');
    await fn(async () => void (await holder.query('SELECT pg_advisory_unlock(7)')));
  } finally {
    await holder.end();
  }
}

async function itemExists(id: number): Promise<boolean> {
  return (await cluster.query('SELECT 1 FROM items WHERE id = $1', [id])).length === 1;
}

const thisFile = 'release.test.ts';

/** The backend pid pg.Client records at connect; @types/pg does not declare it. */
function pidOf(client: pg.PoolClient): number {
  return (client as unknown as { processID: number }).processID;
}

describe('release inside a transaction', () => {
  test('status T: rolled back before the same connection is reused', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const first = await pool.connect();
      const pid = pidOf(first);
      await first.query('BEGIN');
      await first.query('CREATE TEMP TABLE dirty_t (x int)');
      first.release();

      // max: 1, so this waits for the rollback and gets the same session.
      const next = await pool.connect();
      try {
        assert.equal(pidOf(next), pid);
        const { rows } = await next.query("SELECT to_regclass('pg_temp.dirty_t') AS t, txid_current_if_assigned() AS x");
        assert.deepEqual(rows, [{ t: null, x: null }]);
        assert.equal(pool.stats().evictions['dirty-session'], 0);
      } finally {
        next.release();
      }
    });
  });

  test('status E (a statement failed): rolled back, and the session accepts queries again', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const first = await pool.connect();
      const pid = pidOf(first);
      await first.query('BEGIN');
      await first.query('CREATE TEMP TABLE dirty_e (x int)');
      await assert.rejects(first.query('SELECT 1 / 0'), { code: '22012' });
      first.release();

      const next = await pool.connect();
      try {
        assert.equal(pidOf(next), pid);
        // Still inside the failed transaction, this would raise 25P02.
        const { rows } = await next.query("SELECT to_regclass('pg_temp.dirty_e') AS t, txid_current_if_assigned() AS x");
        assert.deepEqual(rows, [{ t: null, x: null }]);
      } finally {
        next.release();
      }
    });
  });
});

describe('use after release', () => {
  test('promise form rejects with ClientReleasedError pointing at the release call', async () => {
    await withPool({ releaseTraces: true }, async (pool) => {
      const client = await pool.connect();
      client.release();
      const error = await client.query('SELECT 1').then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ClientReleasedError, String(error));
      assert.equal(error.code, 'PGL_CLIENT_RELEASED');
      assert.ok(error.releasedAt?.includes(thisFile), error.releasedAt);
      assert.ok(error.message.includes('Released at'));
    });
  });

  test('callback form gets the error in the callback', async () => {
    await withPool({ releaseTraces: true }, async (pool) => {
      const client = await pool.connect();
      client.release();
      const error = await new Promise<unknown>((resolve) => {
        client.query('SELECT 1', (err: Error) => resolve(err));
      });
      assert.ok(error instanceof ClientReleasedError, String(error));
      assert.ok(error.releasedAt?.includes(thisFile), error.releasedAt);
      // pg's other callback form: in the config, with undefined returned.
      const inConfig = await new Promise<unknown>((resolve) => {
        const config = { text: 'SELECT 1', callback: (err: Error) => resolve(err) };
        assert.equal(client.query(config as pg.QueryConfig), undefined);
      });
      assert.ok(inConfig instanceof ClientReleasedError, String(inConfig));
    });
  });

  test('releaseTraces: false leaves releasedAt undefined', async () => {
    await withPool({ releaseTraces: false }, async (pool) => {
      const client = await pool.connect();
      client.release();
      const error = await client.query('SELECT 1').then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ClientReleasedError, String(error));
      assert.equal(error.releasedAt, undefined);
      assert.ok(!error.message.includes('Released at'));
    });
  });

  test('a stale handle stays refused while the new holder of the same connection works', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const stale = await pool.connect();
      const pid = pidOf(stale);
      stale.release();
      const current = await pool.connect();
      try {
        assert.equal(pidOf(current), pid);
        await assert.rejects(stale.query('SELECT 1'), ClientReleasedError);
        const { rows } = await current.query('SELECT pg_backend_pid() AS pid');
        assert.equal(rows[0].pid, pid);
        // Releasing the stale handle again must not give away the current holder's connection.
        assert.throws(() => stale.release(), DoubleReleaseError);
        assert.equal(pool.idleCount, 0);
      } finally {
        current.release();
      }
      assert.equal(pool.idleCount, 1);
    });
  });

  test('a second release() throws DoubleReleaseError with the first release site', async () => {
    await withPool({ releaseTraces: true }, async (pool) => {
      const client = await pool.connect();
      client.release();
      const error = (() => {
        try {
          client.release();
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      assert.ok(error instanceof DoubleReleaseError, String(error));
      assert.equal(error.code, 'PGL_DOUBLE_RELEASE');
      assert.ok(error.releasedAt?.includes(thisFile), error.releasedAt);
      assert.equal(pool.idleCount, 1);
    });
  });
});

describe('release(err)', () => {
  test('destroys the connection: the next checkout gets a new backend', async () => {
    await withPool({ max: 1 }, async (pool, app) => {
      const first = await pool.connect();
      const pid = pidOf(first);
      const evicted = once(pool, 'evict') as Promise<[EvictionEvent]>;
      const cause = new Error('caller saw something wrong');
      first.release(cause);
      const [event] = await evicted;
      assert.equal(event.reason, 'released-with-error');
      assert.equal(event.error, cause);

      const second = await pool.connect();
      assert.notEqual(pidOf(second), pid);
      second.release(true); // pg's other spelling of "destroy it"
      assert.equal(pool.stats().evictions['released-with-error'], 2);
      await waitFor('destroyed backends to disconnect', async () => (await cluster.backendPids(app)).length === 0);
    });
  });

  test('await using releases at the end of the scope', async () => {
    await withPool({ max: 1 }, async (pool) => {
      let handle: pg.PoolClient | undefined;
      {
        await using client = await pool.connect();
        handle = client;
        assert.ok(client instanceof pg.Client);
        assert.equal(pool.idleCount, 0);
      }
      assert.equal(pool.idleCount, 1);
      await assert.rejects(handle.query('SELECT 1'), ClientReleasedError);
    });
  });
});

describe('withClient', () => {
  test('returns fn\'s value and releases', async () => {
    await withPool({}, async (pool) => {
      const value = await pool.withClient(async (client) => (await client.query('SELECT 41 + 1 AS n')).rows[0].n);
      assert.equal(value, 42);
      assert.deepEqual([pool.totalCount, pool.idleCount], [1, 1]);
    });
  });

  test('releases when fn throws, keeping a connection that is still fine', async () => {
    await withPool({}, async (pool) => {
      const boom = new Error('boom');
      await assert.rejects(pool.withClient(async () => Promise.reject(boom)), (e) => e === boom);
      await assert.rejects(pool.withClient((client) => client.query('SELECT nope')), { code: '42703' });
      // After an error the session is returned once its ReadyForQuery arrives, which can trail the rejection.
      await waitFor('the connection back in the pool', () => pool.idleCount === 1);
      assert.equal(pool.totalCount, 1);
      assert.equal(pool.stats().evictions['released-with-error'], 0);
    });
  });

  test('fn that releases the client itself causes no double release', async () => {
    await withPool({}, async (pool) => {
      const value = await pool.withClient(async (client) => {
        client.release();
        return 'done';
      });
      assert.equal(value, 'done');
      assert.equal(pool.idleCount, 1);
    });
  });
});

describe('transaction', () => {
  test('commits: the row is invisible to others until COMMIT, visible after', async () => {
    await withPool({}, async (pool) => {
      const result = await pool.transaction(async (client) => {
        await client.query('INSERT INTO items VALUES (1, $1)', ['committed']);
        assert.equal(await itemExists(1), false);
        return 'ok';
      });
      assert.equal(result, 'ok');
      assert.equal(await itemExists(1), true);
    });
  });

  test('rolls back and rethrows when fn throws', async () => {
    await withPool({}, async (pool) => {
      const boom = new Error('abort this');
      await assert.rejects(
        pool.transaction(async (client) => {
          await client.query('INSERT INTO items VALUES (2, $1)', ['rolled back']);
          throw boom;
        }),
        (e) => e === boom,
      );
      assert.equal(await itemExists(2), false);
      assert.equal(pool.idleCount, 1);
    });
  });

  test('applies isolationLevel and readOnly', async () => {
    await withPool({}, async (pool) => {
      const show = async (client: pg.PoolClient) => {
        const iso = (await client.query('SHOW transaction_isolation')).rows[0].transaction_isolation;
        const ro = (await client.query('SHOW transaction_read_only')).rows[0].transaction_read_only;
        return [iso, ro];
      };
      assert.deepEqual(await pool.transaction(show), ['read committed', 'off']);
      assert.deepEqual(await pool.transaction(show, { isolationLevel: 'serializable', readOnly: true }), ['serializable', 'on']);
      assert.deepEqual(await pool.transaction(show, { isolationLevel: 'repeatable read' }), ['repeatable read', 'off']);
      await assert.rejects(
        pool.transaction((client) => client.query('INSERT INTO items VALUES (3, $1)', ['ro']), { readOnly: true }),
        { code: '25006' },
      );
    });
  });

  test('a bad isolationLevel rejects with ConfigError before taking a connection', async () => {
    await withPool({}, async (pool) => {
      const options = { isolationLevel: 'chaotic' } as unknown as Parameters<Pool['transaction']>[1];
      const error = await pool.transaction(async () => 'ran', options).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ConfigError, String(error));
      assert.equal(error.option, 'isolationLevel');
      assert.ok(error.message.includes('serializable'));
      assert.equal(pool.stats().acquired, 0);
    });
  });

  test('a swallowed SQL error turns COMMIT into TransactionRolledBackError and nothing is saved', async () => {
    await withPool({}, async (pool) => {
      const error = await pool
        .transaction(async (client) => {
          await client.query('INSERT INTO items VALUES (4, $1)', ['lost']);
          await client.query('SELECT 1 / 0').catch(() => undefined);
          return 'looked fine';
        })
        .then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof TransactionRolledBackError, String(error));
      assert.equal(error.code, 'PGL_TRANSACTION_ROLLED_BACK');
      assert.equal(await itemExists(4), false);
      // The session went back clean, not discarded.
      assert.equal(pool.idleCount, 1);
      assert.equal(pool.stats().evictions['dirty-session'], 0);
    });
  });
});

describe('acquire failures', () => {
  test('AbortSignal stops a waiting connect() with AbortedError carrying the reason', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const held = await pool.connect();
      try {
        const controller = new AbortController();
        const waiting = pool.connect({ signal: controller.signal }).then(() => undefined, (e: unknown) => e);
        await waitFor('the connect to queue', () => pool.waitingCount === 1);
        const reason = new Error('user went away');
        controller.abort(reason);
        const error = await waiting;
        assert.ok(error instanceof AbortedError, String(error));
        assert.equal(error.code, 'PGL_ABORTED');
        assert.equal(error.cause, reason);
        assert.equal(pool.waitingCount, 0);
        // An already-aborted signal fails at once instead of queueing.
        await assert.rejects(pool.withClient(async () => 'ran', { signal: AbortSignal.abort() }), AbortedError);
      } finally {
        held.release();
      }
      // The pool is intact: the held connection is reusable.
      assert.equal((await pool.query('SELECT 1 AS one')).rows[0]?.one, 1);
      // An idle connection is free now, and an already-aborted signal must still win.
      assert.equal(pool.idleCount, 1);
      await assert.rejects(pool.connect({ signal: AbortSignal.abort() }), AbortedError);
      await assert.rejects(pool.withClient(async () => 'ran', { signal: AbortSignal.abort() }), AbortedError);
      assert.equal(pool.idleCount, 1);
    });
  });

  test('an exhausted pool times out with AcquireTimeoutError reason exhausted', async () => {
    // Opened up front: on a loaded machine, opening alone can take longer than this short deadline.
    await withPool({ max: 1, min: 1, connectionTimeoutMillis: 200 }, async (pool) => {
      await waitFor('the connection to open', () => pool.idleCount === 1);
      const held = await pool.connect();
      try {
        const error = await pool.connect().then(() => undefined, (e: unknown) => e);
        assert.ok(error instanceof AcquireTimeoutError, String(error));
        assert.equal(error.code, 'PGL_ACQUIRE_TIMEOUT');
        assert.equal(error.reason, 'exhausted');
        assert.equal(error.cause, undefined);
        // Counted while the timed-out caller was still queued.
        const { total, idle, waiting, max } = error.counts;
        assert.deepEqual({ total, idle, waiting, max }, { total: 1, idle: 0, waiting: 1, max: 1 });
        assert.ok(error.message.includes('exhausted'), error.message);
        assert.equal(pool.waitingCount, 0);
      } finally {
        held.release();
      }
    });
  });

  test('releasing with a query still running: it finishes, and the next checkout waits for it on the same connection', async () => {
    await withLock(async (unlock) => {
      await withPool({ max: 1 }, async (pool) => {
        const client = await pool.connect();
        const pid = pidOf(client);
        const blocked = client.query('SELECT 42 AS n FROM pg_advisory_xact_lock(7)');
        client.release();
        let handedOut = false;
        const checkout = pool.connect().then((next) => {
          handedOut = true;
          return next;
        });
        await waitFor('the checkout to queue', () => pool.waitingCount === 1);
        // A round trip on another connection: time for a wrongly handed-out client to arrive.
        await cluster.query('SELECT 1');
        assert.equal(handedOut, false, 'handed out while its statement still ran');
        await unlock();
        assert.deepEqual((await blocked).rows, [{ n: 42 }]);
        const next = await checkout;
        try {
          assert.equal(pidOf(next), pid);
          assert.deepEqual((await next.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
        } finally {
          next.release();
        }
        assert.equal(pool.stats().evictions['query-in-flight'], 0);
      });
    });
  });
});
