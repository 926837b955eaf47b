// Drizzle (drizzle-orm/node-postgres) over pg-lifeline's Pool, against a real server: ordinary
// work, its own transactions, and what an app sees when connections are killed under it.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { DrizzleQueryError, eq, sql } from 'drizzle-orm';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { integer, pgTable, text } from 'drizzle-orm/pg-core';
import { ConnectionLostError, OutcomeUnknownError, isConnectionError, isOutcomeUnknown, type Pool } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { SCHEMA, killBlocking, paymentCount, running, settled, terminate, warm, withPool } from './orm-shared.js';

const items = pgTable('items', { id: integer().primaryKey(), label: text().notNull() });
const payments = pgTable('payments', { ref: text().notNull(), amount: integer().notNull() });

type Db = NodePgDatabase;

let cluster: PgCluster;

before(async () => {
  cluster = await PgCluster.start();
  await cluster.query(SCHEMA);
});

after(async () => {
  await cluster?.destroy();
});

beforeEach(async () => {
  await cluster.query(`TRUNCATE items, payments; INSERT INTO items VALUES (1, 'one'), (2, 'two')`);
});

/** The pool goes in where Drizzle takes a pg.Pool, with no cast: the type check is part of the test. */
function connect(pool: Pool): Db {
  return drizzle({ client: pool });
}

async function backendPid(db: Pick<Db, 'execute'>): Promise<number> {
  const { rows } = await db.execute<{ pid: number }>(sql`SELECT pg_backend_pid() AS pid`);
  const pid = rows[0]?.pid;
  assert.ok(typeof pid === 'number');
  return pid;
}

/** A read, a write and a transaction at once, so that each takes its own connection. */
function mixedWork(db: Db, id: number): Promise<unknown[]> {
  return Promise.all([
    db.select().from(items).where(eq(items.id, 2)),
    db.insert(items).values({ id, label: 'inserted' }).returning({ id: items.id }),
    db.transaction(async (tx) => {
      await tx.update(items).set({ label: 'updated' }).where(eq(items.id, 1));
      return tx.select({ label: items.label }).from(items).where(eq(items.id, 1));
    }),
  ]);
}

function mixedResults(id: number): unknown[] {
  return [[{ id: 2, label: 'two' }], [{ id }], [{ label: 'updated' }]];
}

describe('Drizzle over pg-lifeline: ordinary work', () => {
  test('insert, update and select through the query builder', async () => {
    await withPool(cluster, {}, async ({ pool }) => {
      const db = connect(pool);
      assert.deepEqual(await db.insert(items).values({ id: 3, label: 'three' }).returning(), [{ id: 3, label: 'three' }]);
      const updated = await db.update(items).set({ label: 'deux' }).where(eq(items.id, 2)).returning({ id: items.id });
      assert.deepEqual(updated, [{ id: 2 }]);
      assert.deepEqual(await db.select().from(items).orderBy(items.id), [
        { id: 1, label: 'one' },
        { id: 2, label: 'deux' },
        { id: 3, label: 'three' },
      ]);
      await settled(pool);
    });
  });

  test('db.transaction commits, and rolls back when its callback throws', async () => {
    await withPool(cluster, { max: 1 }, async ({ pool }) => {
      const db = connect(pool);
      const committed = await db.transaction(async (tx) => {
        await tx.insert(payments).values({ ref: 'kept', amount: 5 });
        await tx.update(items).set({ label: 'paid' }).where(eq(items.id, 1));
        return 'done';
      });
      assert.equal(committed, 'done');
      assert.equal(await paymentCount(cluster, 'kept'), 1);

      const failure = new Error('the app changed its mind');
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.insert(payments).values({ ref: 'dropped', amount: 5 });
          throw failure;
        }),
        (error) => error === failure,
      );
      assert.equal(await paymentCount(cluster, 'dropped'), 0);
      const stats = await settled(pool);
      // Drizzle rolled back itself, so the session came back clean and was kept.
      assert.equal(stats.evictions['dirty-session'], 0);
      assert.equal(stats.connects, 1);
    });
  });
});

describe('Drizzle over pg-lifeline: every idle backend killed', () => {
  test('once the pool has seen them die, the next queries and a transaction succeed', async () => {
    await withPool(cluster, { max: 3 }, async (t) => {
      const db = connect(t.pool);
      const heard: unknown[] = [];
      t.pool.on('error', (error: unknown) => heard.push(error));
      await warm(cluster, t, 3);
      assert.equal(await cluster.terminateBackends(t.app), 3);
      await waitFor('the pool to drop the dead connections', () => t.pool.stats().evictions.died === 3);

      assert.deepEqual(await mixedWork(db, 10), mixedResults(10));
      // As with pg.Pool, a listener hears of each idle death; none reached the app's calls.
      assert.deepEqual(heard.map((error) => (error as { code?: unknown }).code), ['57P01', '57P01', '57P01']);
      const stats = await settled(t.pool);
      assert.equal(stats.evictions.died, 3);
      assert.equal(stats.retries, 0, 'no dead connection was handed out, so nothing needed a retry');
    });
  });

  test('without waiting for the pool, and with no error listener, the next queries succeed', async () => {
    await withPool(cluster, { max: 3 }, async (t) => {
      const db = connect(t.pool);
      await warm(cluster, t, 3);
      assert.equal(await cluster.terminateBackends(t.app), 3);
      // pg.Pool would crash the process here: idle clients died and nobody listens for 'error'.
      assert.deepEqual(await mixedWork(db, 11), mixedResults(11));
      assert.equal((await settled(t.pool)).evictions.died, 3);
    });
  });

  test('before the pool can have read the deaths, a read-only (idempotent) pool retries its reads', async () => {
    // The 57P01 arrives after each statement was sent, so only a pool allowed to repeat any
    // statement retries them; Drizzle cannot mark single statements idempotent.
    await withPool(cluster, { max: 3, idempotent: true }, async (t) => {
      const db = connect(t.pool);
      const pids = await warm(cluster, t, 3);
      killBlocking(pids);
      // Sent before the event loop runs again, so each read goes out on a connection that is dead.
      const reads = await Promise.all([
        db.select().from(items).where(eq(items.id, 1)),
        db.select().from(items).where(eq(items.id, 2)),
        db.select({ n: sql<number>`count(*)::int` }).from(items),
      ]);
      assert.deepEqual(reads, [[{ id: 1, label: 'one' }], [{ id: 2, label: 'two' }], [{ n: 2 }]]);
      const stats = await settled(t.pool);
      assert.equal(stats.retries, 3, 'each read met a dead connection once, then ran on a new one');
      assert.equal(stats.evictions.died, 3);
    });
  });
});

describe('Drizzle over pg-lifeline: the connection killed inside db.transaction', () => {
  test('between two statements: it rejects, saves nothing, and the app retry commits once', async () => {
    await withPool(cluster, { max: 2 }, async ({ pool }) => {
      const db = connect(pool);
      const heard: unknown[] = [];
      pool.on('error', (error: unknown) => heard.push(error));
      const ref = 'between';
      let attempts = 0;
      let statementError: unknown;
      const pay = (): Promise<void> =>
        db.transaction(async (tx) => {
          attempts++;
          await tx.insert(payments).values({ ref, amount: 10 });
          if (attempts === 1) await terminate(cluster, pool, await backendPid(tx));
          await tx
            .insert(items)
            .values({ id: 20, label: ref })
            .catch((error: unknown) => {
              statementError = error;
              throw error;
            });
        });

      const error = await pay().then(() => assert.fail('the transaction should fail'), (e: unknown) => e);
      // Drizzle wraps driver errors, and throws the error of its own ROLLBACK, which failed too.
      assert.ok(error instanceof DrizzleQueryError, String(error));
      assert.equal(error.query, 'rollback');
      assert.equal(isConnectionError(error), true, 'the wrapper is classified by what it wraps');
      const lost = error.cause;
      assert.ok(lost instanceof ConnectionLostError, String(lost));
      assert.equal(lost.lifelineCode, 'PGL_CONNECTION_LOST');
      assert.equal(lost.outcome, 'not-applied');
      assert.equal(lost.sqlState, '57P01');
      assert.equal(lost.diagnosis.cause, 'admin-terminated');
      assert.match(lost.message, /pg_terminate_backend/);
      assert.match(lost.message, /running it again is safe/);
      // The statement after the kill never reached the server, and says so.
      assert.ok(statementError instanceof DrizzleQueryError);
      assert.ok(statementError.cause instanceof ConnectionLostError);
      assert.equal(isOutcomeUnknown(statementError.cause), false);

      assert.equal(await paymentCount(cluster, ref), 0, 'the insert before the kill was rolled back');
      const stats = await settled(pool);
      assert.equal(stats.evictions.died, 1);
      assert.deepEqual(heard, [], 'a checked-out connection died: the error went to the app, not to the event');

      await pay();
      assert.equal(attempts, 2);
      assert.equal(await paymentCount(cluster, ref), 1);
      assert.deepEqual(await db.select({ label: items.label }).from(items).where(eq(items.id, 20)), [{ label: ref }]);
      await settled(pool);
    });
  });

  test('during a statement: the statement reports an unknown outcome, yet nothing is saved and a retry commits once', async () => {
    await withPool(cluster, { max: 2 }, async ({ pool }) => {
      const db = connect(pool);
      const ref = 'during';
      let attempts = 0;
      let statementError: unknown;
      const pay = (): Promise<void> =>
        db.transaction(async (tx) => {
          attempts++;
          await tx.insert(payments).values({ ref, amount: 10 });
          if (attempts === 1) {
            const pid = await backendPid(tx);
            // Settled at once, so its rejection is handled while the kill is on its way.
            const slow = tx.execute(sql`SELECT pg_sleep(30)`).then(() => undefined, (e: unknown) => e);
            await running(cluster, pid);
            await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
            statementError = await slow;
            throw statementError ?? new Error('pg_sleep was not cut off');
          }
          await tx.insert(items).values({ id: 21, label: ref });
        });

      const error = await pay().then(() => assert.fail('the transaction should fail'), (e: unknown) => e);
      // The statement was running when its session ended: on its own, its outcome is unknown.
      assert.ok(statementError instanceof DrizzleQueryError);
      const cut = statementError.cause;
      assert.ok(cut instanceof OutcomeUnknownError, String(cut));
      assert.equal(cut.lifelineCode, 'PGL_OUTCOME_UNKNOWN');
      assert.equal(cut.code, '57P01', "pg's code stays");
      assert.equal(cut.sqlState, '57P01');
      assert.equal(cut.diagnosis.cause, 'admin-terminated');
      // What Drizzle throws is its failed ROLLBACK's error, still a typed connection loss.
      assert.ok(error instanceof DrizzleQueryError, String(error));
      assert.equal(error.query, 'rollback');
      assert.ok(error.cause instanceof ConnectionLostError, String(error.cause));

      // Uncommitted work dies with the session, whatever the statement's own outcome was.
      assert.equal(await paymentCount(cluster, ref), 0);
      assert.equal((await settled(pool)).evictions.died, 1);
      await pay();
      assert.equal(attempts, 2);
      assert.equal(await paymentCount(cluster, ref), 1);
    });
  });

  test('pool.transaction({ retry: true }) around Drizzle: the pool reruns the killed try itself, and it commits once', async () => {
    await withPool(cluster, {}, async ({ pool }) => {
      const ref = 'pool-retry';
      let attempts = 0;
      const result = await pool.transaction(
        async (client) => {
          attempts++;
          // Drizzle over the transaction's own client; its DrizzleQueryError reaches the pool as is.
          const tx = drizzle({ client });
          await tx.insert(payments).values({ ref, amount: 10 });
          if (attempts === 1) await terminate(cluster, pool, await backendPid(tx));
          await tx.insert(items).values({ id: 22, label: ref });
          return attempts;
        },
        { retry: true },
      );
      assert.equal(result, 2);
      const stats = await settled(pool);
      assert.deepEqual(stats.retriesByKind, { 'connection-lost': 1 });
      assert.equal(await paymentCount(cluster, ref), 1);
    });
  });
});
