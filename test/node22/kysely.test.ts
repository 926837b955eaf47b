// Kysely's PostgresDialect over pg-lifeline's Pool, against a real server: ordinary work, its own
// transactions, and what an app sees when connections are killed under it.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
import { ConnectionLostError, OutcomeUnknownError, PoolEndedError, isOutcomeUnknown, type Pool } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { SCHEMA, paymentCount, running, settled, terminate, warm, withPool } from '../integrations/orm-shared.js';

interface Database {
  items: { id: number; label: string };
  payments: { ref: string; amount: number };
}

type Db = Kysely<Database>;

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

/** The pool goes in where Kysely takes a pg.Pool, with no cast: the type check is part of the test. */
function connect(pool: Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

async function backendPid(db: Db | Transaction<Database>): Promise<number> {
  const { rows } = await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(db);
  const pid = rows[0]?.pid;
  assert.ok(typeof pid === 'number');
  return pid;
}

/** A read, a write and a transaction at once, so that each takes its own connection. */
function mixedWork(db: Db, id: number): Promise<unknown[]> {
  return Promise.all([
    db.selectFrom('items').selectAll().where('id', '=', 2).execute(),
    db.insertInto('items').values({ id, label: 'inserted' }).returning('id').execute(),
    db.transaction().execute(async (trx) => {
      await trx.updateTable('items').set({ label: 'updated' }).where('id', '=', 1).execute();
      return trx.selectFrom('items').select('label').where('id', '=', 1).execute();
    }),
  ]);
}

function mixedResults(id: number): unknown[] {
  return [[{ id: 2, label: 'two' }], [{ id }], [{ label: 'updated' }]];
}

test('runs on Node.js 22 or later, as kysely 0.29 requires', () => {
  assert.ok(Number(process.versions.node.split('.')[0]) >= 22, process.versions.node);
});

describe('Kysely over pg-lifeline: ordinary work', () => {
  test('insert, update and select through the query builder', async () => {
    await withPool(cluster, {}, async ({ pool }) => {
      const db = connect(pool);
      const inserted = await db.insertInto('items').values({ id: 3, label: 'three' }).returningAll().executeTakeFirstOrThrow();
      assert.deepEqual(inserted, { id: 3, label: 'three' });
      const updated = await db.updateTable('items').set({ label: 'deux' }).where('id', '=', 2).executeTakeFirstOrThrow();
      assert.equal(updated.numUpdatedRows, 1n);
      assert.deepEqual(await db.selectFrom('items').selectAll().orderBy('id').execute(), [
        { id: 1, label: 'one' },
        { id: 2, label: 'deux' },
        { id: 3, label: 'three' },
      ]);
      await settled(pool);
    });
  });

  test('db.transaction().execute commits, and rolls back when its callback throws', async () => {
    await withPool(cluster, { max: 1 }, async ({ pool }) => {
      const db = connect(pool);
      const committed = await db.transaction().execute(async (trx) => {
        await trx.insertInto('payments').values({ ref: 'kept', amount: 5 }).execute();
        await trx.updateTable('items').set({ label: 'paid' }).where('id', '=', 1).execute();
        return 'done';
      });
      assert.equal(committed, 'done');
      assert.equal(await paymentCount(cluster, 'kept'), 1);

      const failure = new Error('the app changed its mind');
      await assert.rejects(
        db.transaction().execute(async (trx) => {
          await trx.insertInto('payments').values({ ref: 'dropped', amount: 5 }).execute();
          throw failure;
        }),
        (error) => error === failure,
      );
      assert.equal(await paymentCount(cluster, 'dropped'), 0);
      const stats = await settled(pool);
      // Kysely rolled back itself, so the session came back clean and was kept.
      assert.equal(stats.evictions['dirty-session'], 0);
      assert.equal(stats.connects, 1);
    });
  });

  test('db.destroy() ends the pg-lifeline pool it was given', async () => {
    await withPool(cluster, {}, async ({ pool }) => {
      const db = connect(pool);
      assert.equal((await db.selectFrom('items').select('id').execute()).length, 2);
      await db.destroy();
      assert.equal(pool.ended, true);
      await assert.rejects(pool.query('SELECT 1'), PoolEndedError);
    });
  });
});

describe('Kysely over pg-lifeline: every idle backend killed', () => {
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
});

describe('Kysely over pg-lifeline: the connection killed inside db.transaction().execute', () => {
  test('between two statements: it rejects, saves nothing, and the app retry commits once', async () => {
    await withPool(cluster, { max: 2 }, async ({ pool }) => {
      const db = connect(pool);
      const heard: unknown[] = [];
      pool.on('error', (error: unknown) => heard.push(error));
      const ref = 'between';
      let attempts = 0;
      let statementError: unknown;
      const pay = (): Promise<void> =>
        db.transaction().execute(async (trx) => {
          attempts++;
          await trx.insertInto('payments').values({ ref, amount: 10 }).execute();
          if (attempts === 1) await terminate(cluster, pool, await backendPid(trx));
          await trx
            .insertInto('items')
            .values({ id: 20, label: ref })
            .execute()
            .catch((error: unknown) => {
              statementError = error;
              throw error;
            });
        });

      const error = await pay().then(() => assert.fail('the transaction should fail'), (e: unknown) => e);
      // Kysely throws the error of its own ROLLBACK, which failed too; it passes pg-lifeline's errors through.
      assert.ok(error instanceof ConnectionLostError, String(error));
      assert.equal(error.lifelineCode, 'PGL_CONNECTION_LOST');
      assert.equal(error.outcome, 'not-applied');
      assert.equal(error.sqlState, '57P01');
      assert.equal(error.diagnosis.cause, 'admin-terminated');
      assert.match(error.message, /pg_terminate_backend/);
      assert.match(error.message, /running it again is safe/);
      // The statement after the kill never reached the server, and says so.
      assert.ok(statementError instanceof ConnectionLostError, String(statementError));
      assert.equal(isOutcomeUnknown(statementError), false);

      assert.equal(await paymentCount(cluster, ref), 0, 'the insert before the kill was rolled back');
      const stats = await settled(pool);
      assert.equal(stats.evictions.died, 1);
      assert.deepEqual(heard, [], 'a checked-out connection died: the error went to the app, not to the event');

      await pay();
      assert.equal(attempts, 2);
      assert.equal(await paymentCount(cluster, ref), 1);
      assert.deepEqual(await db.selectFrom('items').select('label').where('id', '=', 20).execute(), [{ label: ref }]);
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
        db.transaction().execute(async (trx) => {
          attempts++;
          await trx.insertInto('payments').values({ ref, amount: 10 }).execute();
          if (attempts === 1) {
            const pid = await backendPid(trx);
            // Settled at once, so its rejection is handled while the kill is on its way.
            const slow = sql`SELECT pg_sleep(30)`.execute(trx).then(() => undefined, (e: unknown) => e);
            await running(cluster, pid);
            await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
            statementError = await slow;
            throw statementError ?? new Error('pg_sleep was not cut off');
          }
          await trx.insertInto('items').values({ id: 21, label: ref }).execute();
        });

      const error = await pay().then(() => assert.fail('the transaction should fail'), (e: unknown) => e);
      // The statement was running when its session ended: on its own, its outcome is unknown.
      assert.ok(statementError instanceof OutcomeUnknownError, String(statementError));
      assert.equal(statementError.lifelineCode, 'PGL_OUTCOME_UNKNOWN');
      assert.equal(statementError.code, '57P01', "pg's code stays");
      assert.equal(statementError.sqlState, '57P01');
      assert.equal(statementError.diagnosis.cause, 'admin-terminated');
      // What Kysely throws is its failed ROLLBACK's error, still a typed connection loss.
      assert.ok(error instanceof ConnectionLostError, String(error));

      // Uncommitted work dies with the session, whatever the statement's own outcome was.
      assert.equal(await paymentCount(cluster, ref), 0);
      assert.equal((await settled(pool)).evictions.died, 1);
      await pay();
      assert.equal(attempts, 2);
      assert.equal(await paymentCount(cluster, ref), 1);
    });
  });

  test('pool.transaction({ retry: true }) running Kysely-built SQL: the pool reruns the killed try itself, and it commits once', async () => {
    await withPool(cluster, {}, async ({ pool }) => {
      // Kysely cannot run on one given client, so here it only builds the SQL.
      const db = connect(pool);
      const ref = 'pool-retry';
      const payment = db.insertInto('payments').values({ ref, amount: 10 }).compile();
      const item = db.insertInto('items').values({ id: 22, label: ref }).compile();
      let attempts = 0;
      const result = await pool.transaction(
        async (client) => {
          attempts++;
          await client.query(payment.sql, [...payment.parameters]);
          if (attempts === 1) {
            const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
            await terminate(cluster, pool, rows[0]?.pid ?? assert.fail('no pid'));
          }
          await client.query(item.sql, [...item.parameters]);
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
