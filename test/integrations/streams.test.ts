// pg-cursor and pg-query-stream through pg-lifeline's Pool: batched reads and streams inside and
// outside transactions, what happens to a connection released with a cursor still open, and
// backends killed while idle or in the middle of a read.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import QueryStream from 'pg-query-stream';
import { Pool, classifyFailure, type EvictionEvent, type PoolOptions } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { settleWithin, waitFor } from '../harness/wait.js';

interface Row {
  id: number;
  label: string;
}

interface Cursor extends pg.Submittable {
  read(rows: number): Promise<Row[]>;
  close(): Promise<void>;
}

// pg-cursor ships no declarations: require() keeps tsc from looking for them.
const Cursor = createRequire(import.meta.url)('pg-cursor') as new (text: string) => Cursor;

const ROWS = 5000;
const SELECT_ALL = 'SELECT id, label FROM stream_rows ORDER BY id';
// A read cut off by a fault must settle within this; it settles in milliseconds when it does.
const SETTLE_MILLIS = 5_000;

let cluster: PgCluster;

before(async () => {
  cluster = await PgCluster.start();
  await cluster.query(`CREATE TABLE stream_rows AS SELECT g AS id, md5(g::text) AS label FROM generate_series(1, ${ROWS}) g`);
  await cluster.query('ALTER TABLE stream_rows ADD PRIMARY KEY (id)');
});

after(async () => {
  await cluster?.destroy();
});

let poolSeq = 0;

/** Runs `fn` with a fresh pool (its own application_name, so faults reach it alone) and ends it. */
async function withPool(options: PoolOptions, fn: (pool: Pool, app: string, evictions: EvictionEvent[]) => Promise<void>): Promise<void> {
  const app = `streams-${process.pid}-${++poolSeq}`;
  const pool = new Pool({ ...cluster.clientConfig(), application_name: app, ...options });
  const evictions: EvictionEvent[] = [];
  pool.on('evict', (event: EvictionEvent) => evictions.push(event));
  try {
    await fn(pool, app, evictions);
  } finally {
    await pool.end();
  }
}

async function backendPid(client: pg.PoolClient): Promise<number> {
  const [row] = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows;
  assert.ok(row);
  return row.pid;
}

/** What the server says about the session: an open transaction (now() is its start) and open portals. */
async function session(client: pg.PoolClient): Promise<{ inTransaction: boolean; portals: number }> {
  const [row] = (
    await client.query<{ inTransaction: boolean; portals: number }>(
      'SELECT now() <> statement_timestamp() AS "inTransaction", (SELECT count(*)::int FROM pg_cursors) AS portals',
    )
  ).rows;
  assert.ok(row);
  return row;
}

const clean = { inTransaction: false, portals: 0 };

async function readAll(cursor: Cursor, batch: number): Promise<Row[]> {
  const rows: Row[] = [];
  for (;;) {
    const next = await cursor.read(batch);
    if (next.length === 0) return rows;
    rows.push(...next);
  }
}

async function drain(stream: QueryStream, onRow: (count: number) => Promise<void> = async () => undefined): Promise<Row[]> {
  const rows: Row[] = [];
  for await (const row of stream) {
    rows.push(row as Row);
    await onRow(rows.length);
  }
  return rows;
}

/** Every row of stream_rows, once each, in order. */
function assertComplete(rows: Row[], extra = 0): void {
  assert.equal(rows.length, ROWS + extra);
  assert.ok(rows.every((row, i) => row.id === i + 1), 'rows out of order or missing');
}

function evictionCount(pool: Pool): number {
  return Object.values(pool.stats().evictions).reduce((sum, n) => sum + n, 0);
}

/** Checks the single connection came back idle and clean, then that the next checkout reuses it. */
async function assertReused(pool: Pool, pid: number): Promise<void> {
  const stats = pool.stats();
  assert.deepEqual({ total: stats.total, idle: stats.idle, active: stats.active }, { total: 1, idle: 1, active: 0 });
  assert.equal(evictionCount(pool), 0, JSON.stringify(stats.evictions));
  const next = await pool.connect();
  try {
    assert.equal(await backendPid(next), pid, 'the same session is handed out again');
    assert.deepEqual(await session(next), clean);
  } finally {
    next.release();
  }
  assert.equal(pool.stats().connects, 1);
}

describe('ordinary use through a checked-out client', () => {
  test('a cursor read in batches outside a transaction: the connection goes back clean and is reused', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const client = await pool.connect();
      const pid = await backendPid(client);
      try {
        assertComplete(await readAll(client.query(new Cursor(SELECT_ALL)), 700));
      } finally {
        client.release();
      }
      await assertReused(pool, pid);
    });
  });

  test('a cursor inside a transaction sees its writes; rolled back, the connection is reused', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const client = await pool.connect();
      const pid = await backendPid(client);
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO stream_rows VALUES (${ROWS + 1}, 'in the transaction')`);
        assertComplete(await readAll(client.query(new Cursor(SELECT_ALL)), 1000), 1);
        await client.query('ROLLBACK');
      } finally {
        client.release();
      }
      await assertReused(pool, pid);
      assert.deepEqual((await pool.query('SELECT count(*)::int AS n FROM stream_rows')).rows, [{ n: ROWS }]);
    });
  });

  test('a QueryStream read by async iteration outside a transaction: the connection is reused', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const client = await pool.connect();
      const pid = await backendPid(client);
      try {
        assertComplete(await drain(client.query(new QueryStream(SELECT_ALL, [], { batchSize: 250 }))));
      } finally {
        client.release();
      }
      await assertReused(pool, pid);
    });
  });

  test('a QueryStream through pipeline() inside a committed transaction: the connection is reused', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const client = await pool.connect();
      const pid = await backendPid(client);
      const rows: Row[] = [];
      try {
        await client.query('BEGIN');
        const sink = new Writable({
          objectMode: true,
          write(row: Row, _encoding, done) {
            rows.push(row);
            done();
          },
        });
        await pipeline(client.query(new QueryStream(SELECT_ALL, [], { batchSize: 300 })), sink);
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      assertComplete(rows);
      await assertReused(pool, pid);
    });
  });

  test('a cursor closed before release keeps its connection', async () => {
    await withPool({ max: 1 }, async (pool) => {
      const client = await pool.connect();
      const pid = await backendPid(client);
      try {
        const cursor = client.query(new Cursor(SELECT_ALL));
        assert.equal((await cursor.read(100)).length, 100);
        await cursor.close();
      } finally {
        client.release();
      }
      await assertReused(pool, pid);
    });
  });
});

// checkin.ts: a client whose statement is still running (an open cursor is one) is destroyed,
// since its portal and transaction would otherwise run into the next user's work.
describe('released with a cursor still open', () => {
  test('inside a transaction: evicted as query-in-flight; the next user gets a fresh, clean session', async () => {
    await withPool({ max: 1 }, async (pool, app, evictions) => {
      const client = await pool.connect();
      const abandoned = await backendPid(client);
      await client.query('BEGIN');
      const cursor = client.query(new Cursor(SELECT_ALL));
      assert.equal((await cursor.read(100)).length, 100);
      client.release();

      assert.deepEqual(evictions.map((e) => e.reason), ['query-in-flight']);
      const next = await pool.connect();
      try {
        const pid = await backendPid(next);
        assert.notEqual(pid, abandoned);
        assert.deepEqual(await session(next), clean);
        // The abandoned session, with its transaction and portal, is gone from the server too.
        await waitFor('the abandoned backend to exit', async () => (await cluster.backendPids(app)).join() === String(pid));
      } finally {
        next.release();
      }
      assert.equal(pool.stats().evictions['query-in-flight'], 1);
    });
  });

  test('a stream left by break: kept if released after it closes, evicted if released before', async () => {
    await withPool({ max: 1 }, async (pool, _app, evictions) => {
      const leaveEarly = async (client: pg.PoolClient): Promise<QueryStream> => {
        const stream = client.query(new QueryStream(SELECT_ALL, [], { batchSize: 100 }));
        for await (const row of stream) if ((row as Row).id === 150) break;
        return stream;
      };

      const first = await pool.connect();
      const pid = await backendPid(first);
      try {
        const stream = await leaveEarly(first);
        // Breaking out destroys the stream (with an AbortError, which the iterator absorbs); its
        // portal closes one round trip later, and then the stream emits 'close'.
        if (!stream.closed) await new Promise((resolve) => stream.once('close', resolve));
      } finally {
        first.release();
      }
      await assertReused(pool, pid);

      const second = await pool.connect();
      try {
        await leaveEarly(second);
      } finally {
        second.release();
      }
      assert.deepEqual(evictions.map((e) => e.reason), ['query-in-flight']);
      const third = await pool.connect();
      try {
        assert.notEqual(await backendPid(third), pid);
        assert.deepEqual(await session(third), clean);
      } finally {
        third.release();
      }
    });
  });
});

describe('backends killed while the pool is idle', () => {
  test('all of them: the next cursor and stream reads succeed without an error', async () => {
    await withPool({ max: 3 }, async (pool, app) => {
      const warm = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
      for (const client of warm) client.release();
      assert.equal(await cluster.terminateBackends(app), 3);

      const viaCursor = async (): Promise<Row[]> => {
        const client = await pool.connect();
        try {
          return await readAll(client.query(new Cursor(SELECT_ALL)), 500);
        } finally {
          client.release();
        }
      };
      const viaStream = async (): Promise<Row[]> => {
        const client = await pool.connect();
        try {
          return await drain(client.query(new QueryStream(SELECT_ALL, [], { batchSize: 500 })));
        } finally {
          client.release();
        }
      };
      for (const rows of await Promise.all([viaCursor(), viaStream(), viaCursor()])) assertComplete(rows);

      // Each dead connection was dropped before use, by its socket's close or by a checkout probe.
      // No 'error' listener is attached: an idle death re-emitted as 'error' would crash the run.
      const { evictions } = pool.stats();
      assert.equal(evictions.died + evictions['failed-check'], 3, JSON.stringify(evictions));
    });
  });
});

describe('a backend killed in the middle of a read', () => {
  /** After the kill: the pool's one connection is replaced and serves queries again. */
  async function assertRecovered(pool: Pool, evictions: EvictionEvent[]): Promise<void> {
    assert.deepEqual((await pool.query('SELECT 1 AS ok')).rows, [{ ok: 1 }]);
    await waitFor('the pool to settle on one idle connection', () => {
      const s = pool.stats();
      return s.total === 1 && s.idle === 1 && s.active === 0;
    });
    assert.deepEqual(evictions.map((e) => e.reason), ['died']);
    assert.equal(pool.stats().connects, 2);
  }

  test('cursor: the read rejects with a connection error, the pool recovers, a re-read is complete', async () => {
    await withPool({ max: 1 }, async (pool, app, evictions) => {
      const client = await pool.connect();
      let failure: unknown;
      try {
        const cursor = client.query(new Cursor(SELECT_ALL));
        for (let i = 0; i < 4; i++) assert.equal((await cursor.read(250)).length, 250);
        assert.equal(await cluster.terminateBackends(app), 1);
        const outcome = await settleWithin(readAll(cursor, 250), SETTLE_MILLIS);
        assert.ok(typeof outcome === 'object', `the read should fail, not end ${outcome}`);
        failure = outcome.error;
        // Submittables report through their own events, so this is pg's error (57P01), not a
        // ConnectionLostError; pg-lifeline's classification still knows it for a dead connection.
        assert.equal(classifyFailure(failure), 'connection-lost', String(failure));
        // The usual `finally { await cursor.close() }` must not wait for a reply from a dead server.
        assert.equal(await settleWithin(cursor.close(), SETTLE_MILLIS), 'ok');
      } finally {
        client.release(failure instanceof Error ? failure : undefined);
      }
      await assertRecovered(pool, evictions);

      const again = await pool.connect();
      try {
        assertComplete(await readAll(again.query(new Cursor(SELECT_ALL)), 250));
      } finally {
        again.release();
      }
    });
  });

  // pg-query-stream 4.17 finishes destroying a stream only once its cursor has closed, and
  // pg-cursor 2.22's close() waits for a ReadyForQuery that a dead connection never sends
  // (brianc/node-postgres#2642): unless something ends that wait, the stream neither ends nor fails.
  test('QueryStream from a checked-out client: the stream errors, the pool recovers, a re-read is complete', async () => {
    await withPool({ max: 1 }, async (pool, app, evictions) => {
      const client = await pool.connect();
      let failure: unknown;
      try {
        const stream = client.query(new QueryStream(SELECT_ALL, [], { batchSize: 100 }));
        const read = drain(stream, async (count) => {
          if (count === 1000) assert.equal(await cluster.terminateBackends(app), 1);
        });
        const outcome = await settleWithin(read, SETTLE_MILLIS);
        assert.notEqual(outcome, 'hung', 'the stream neither ended nor failed after its backend was killed');
        assert.ok(typeof outcome === 'object', 'the stream should fail, not end');
        failure = outcome.error;
        assert.equal(classifyFailure(failure), 'connection-lost', String(failure));
      } finally {
        client.release(failure instanceof Error ? failure : undefined);
      }
      await assertRecovered(pool, evictions);

      const again = await pool.connect();
      try {
        assertComplete(await drain(again.query(new QueryStream(SELECT_ALL, [], { batchSize: 100 }))));
      } finally {
        again.release();
      }
    });
  });

  test('QueryStream through pool.query: the stream errors and the pool gets its connection back', async () => {
    // Bounded waits, so a connection never given back fails the test instead of stalling it.
    await withPool({ max: 1, connectionTimeoutMillis: SETTLE_MILLIS, shutdownTimeoutMillis: 1000 }, async (pool, app, evictions) => {
      const stream = pool.query(new QueryStream(SELECT_ALL, [], { batchSize: 100 }));
      const outcome = await settleWithin(
        drain(stream, async (count) => {
          if (count === 1000) assert.equal(await cluster.terminateBackends(app), 1);
        }),
        SETTLE_MILLIS,
      );
      assert.notEqual(outcome, 'hung', 'the stream neither ended nor failed after its backend was killed');
      assert.ok(typeof outcome === 'object', 'the stream should fail, not end');
      assert.equal(classifyFailure(outcome.error), 'connection-lost', String(outcome.error));
      await assertRecovered(pool, evictions);
      assertComplete(await drain(pool.query(new QueryStream(SELECT_ALL, [], { batchSize: 100 }))));
    });
  });
});
