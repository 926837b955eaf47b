// Knex over pg-lifeline's Pool (`connectionPool`, knex 3.3), against a real server (password and
// TLS). Each fault runs on pg-lifeline, whose outcome is asserted, and for comparison on a plain
// pg.Pool given the same way and on Knex's own pool (tarn over pg.Client, from `connection`), whose
// errors are only counted and printed (`figure:` lines) for docs/integrations.md.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test, type TestContext } from 'node:test';
import knex, { type Knex } from 'knex';
import * as pg from 'pg';
import { ConnectionLostError, Pool } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { newTally, report, settle, watchProcess, type Tally } from './fault-tally.js';
import { SCHEMA, holdTransactions, killBlocking, paymentCount, settled } from './orm-shared.js';

const setups = [
  { name: 'pg-lifeline (connectionPool)', kind: 'lifeline', lifeline: true },
  { name: 'pg.Pool (connectionPool)', kind: 'pg.Pool', lifeline: false },
  { name: 'Knex default (tarn + pg)', kind: 'tarn', lifeline: false },
] as const;
type Setup = (typeof setups)[number];

let cluster: PgCluster;
let seq = 0;

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

interface Session {
  readonly db: Knex;
  readonly app: string;
  readonly tally: Tally;
  /** pg-lifeline's pool, on that setup only. */
  readonly pool: Pool | undefined;
}

/** Runs `fn` with a Knex instance on `setup`, then destroys it (and ends the pool, which Knex leaves to its owner). */
async function withKnex(t: TestContext, setup: Setup, fn: (s: Session) => Promise<void>): Promise<Tally> {
  const app = `knex-${process.pid}-${++seq}`;
  const tally = newTally();
  const config = { ...cluster.clientConfig(), application_name: app };
  const pool = setup.kind === 'lifeline' ? new Pool({ ...config, max: 3 }) : undefined;
  const plain = setup.kind === 'pg.Pool' ? new pg.Pool({ ...config, max: 3 }) : undefined;
  const onPoolError = (error: unknown): void => void tally.pool.push(error);
  pool?.on('error', onPoolError);
  plain?.on('error', onPoolError);
  plain?.on('connect', (client) =>
    client.on('error', (error: unknown) => {
      // Knex adds no 'error' listener to a client it was handed, and pg.Pool none while it is
      // checked out: with only this one, the error would have crashed the process.
      if (client.listenerCount('error') === 1) tally.escaped.push(error);
    }),
  );
  const given = pool ?? plain;
  // No cast: the type check of `connectionPool` is part of the test.
  const db = given ? knex({ client: 'pg', connectionPool: given }) : knex({ client: 'pg', connection: config, pool: { min: 0, max: 3 } });
  const unwatch = watchProcess(tally);
  try {
    await fn({ db, app, tally, pool });
  } finally {
    unwatch();
    await db.destroy();
    if (pool && !pool.ending) await pool.end();
    await plain?.end();
    report(t, 'Knex', setup.name, tally);
  }
  if (setup.lifeline) assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  return tally;
}

/** Checks `n` connections out at once (each inside a transaction, which holds one) so that `n` backends exist. */
async function warm({ db, app }: Session, n: number): Promise<void> {
  await holdTransactions(n, (body) => db.transaction(body));
  assert.equal((await cluster.backendPids(app)).length, n);
}

/** A builder read, an insert, a transaction and a raw query at once, so each takes its own connection. */
function mixedWork({ db, tally }: Session, id: number): Promise<readonly unknown[]> {
  return settle(tally, [
    db('items').where({ id: 2 }).first(),
    db('items').insert({ id, label: 'inserted' }),
    db.transaction(async (trx) => {
      await trx('items').where({ id: 1 }).update({ label: 'updated' });
      return (await trx('items').where({ id: 1 }).first('label')) as unknown;
    }),
    db.raw('SELECT count(*)::int AS n FROM items WHERE id <= 2').then((result: { rows: unknown[] }) => result.rows),
  ]);
}

async function checkMixed(results: readonly unknown[], id: number): Promise<void> {
  assert.deepEqual(results, [{ id: 2, label: 'two' }, results[1], { label: 'updated' }, [{ n: 2 }]]);
  assert.deepEqual(await cluster.query('SELECT label FROM items WHERE id = $1', [id]), [{ label: 'inserted' }]);
}

async function backendPid(trx: Knex.Transaction): Promise<number> {
  const result = (await trx.raw('SELECT pg_backend_pid() AS pid')) as { rows: { pid: number }[] };
  const pid = result.rows[0]?.pid;
  assert.ok(typeof pid === 'number');
  return pid;
}

for (const setup of setups) {
  describe(`Knex on ${setup.name}`, () => {
    test('ordinary use: query builder insert and select, raw query, transaction', async (t) => {
      await withKnex(t, setup, async ({ db, pool }) => {
        await db('items').insert({ id: 3, label: 'three' });
        assert.deepEqual(await db('items').select('id', 'label').orderBy('id'), [
          { id: 1, label: 'one' },
          { id: 2, label: 'two' },
          { id: 3, label: 'three' },
        ]);
        assert.deepEqual((await db.raw('SELECT label FROM items WHERE id = ?', [3])).rows, [{ label: 'three' }]);
        await db.transaction(async (trx) => {
          await trx('payments').insert({ ref: 'kept', amount: 5 });
        });
        assert.equal(await paymentCount(cluster, 'kept'), 1);
        if (pool) assert.ok((await settled(pool)).connects >= 1, 'Knex ran on the given pool');
      });
    });

    test('every idle backend killed: the next queries', async (t) => {
      const tally = await withKnex(t, setup, async (s) => {
        await warm(s, 3);
        assert.equal(await cluster.terminateBackends(s.app), 3);
        const results = await mixedWork(s, 10);
        if (s.pool) await checkMixed(results, 10);
      });
      if (setup.lifeline) assert.deepEqual(tally.app, []);
    });

    test('every idle backend killed before the pool can have read it: the reads sent on them, then the next ones', async (t) => {
      // Knex runs each statement on a checked-out client, where the pool cannot move it to a new
      // connection: those sent on a dead one fail. What the pool owes: typed errors, healthy next reads.
      const tally = await withKnex(t, setup, async (s) => {
        await warm(s, 3);
        killBlocking(await cluster.backendPids(s.app));
        const reads = (): Promise<readonly unknown[]> =>
          settle(s.tally, [s.db('items').where({ id: 1 }).first(), s.db('items').where({ id: 2 }).first(), s.db('items').count({ n: '*' })]);
        await reads();
        const failed = s.tally.app.length;
        const next = await reads();
        if (s.pool) {
          assert.equal(failed, 3, 'each read met a dead connection');
          for (const error of s.tally.app) assert.ok(error instanceof ConnectionLostError, String(error));
          assert.deepEqual(next, [{ id: 1, label: 'one' }, { id: 2, label: 'two' }, [{ n: '2' }]]);
        }
      });
      if (setup.lifeline) assert.equal(tally.app.length, 3, 'the next reads all succeeded');
    });

    test('fast restart: the next queries', async (t) => {
      const tally = await withKnex(t, setup, async (s) => {
        await warm(s, 3);
        await cluster.restart('fast');
        const results = await mixedWork(s, 11);
        if (s.pool) await checkMixed(results, 11);
      });
      if (setup.lifeline) assert.deepEqual(tally.app, []);
    });

    test("connection killed inside knex.transaction: rolled back, nothing half-saved, the app's retry commits once", async (t) => {
      const tally = await withKnex(t, setup, async (s) => {
        const ref = 'killed';
        let attempts = 0;
        const pay = (): Promise<void> =>
          s.db.transaction(async (trx) => {
            attempts++;
            await trx('payments').insert({ ref, amount: 10 });
            if (attempts === 1) {
              const pid = await backendPid(trx);
              await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
              await waitFor(`backend ${pid} to exit`, async () => !(await cluster.backendPids(s.app)).includes(pid));
            }
            await trx('items').insert({ id: 20, label: ref });
          });
        await settle(s.tally, [pay()]);
        const afterKill = await paymentCount(cluster, ref);
        await settle(s.tally, [pay()]);
        if (s.pool) {
          assert.equal(s.tally.app.length, 1, 'the killed transaction rejected');
          assert.ok(s.tally.app[0] instanceof ConnectionLostError, String(s.tally.app[0]));
          assert.equal(afterKill, 0, 'the insert before the kill was rolled back');
          assert.equal(attempts, 2);
          assert.equal(await paymentCount(cluster, ref), 1);
          assert.deepEqual(await cluster.query('SELECT label FROM items WHERE id = 20'), [{ label: ref }]);
          assert.equal((await settled(s.pool)).evictions.died, 1);
        }
      });
      if (setup.lifeline) assert.equal(tally.app.length, 1, 'only the killed transaction failed');
    });
  });
}

describe('Knex with connectionPool: who ends the pool', () => {
  test('knex.destroy() leaves the pool running; its owner ends it', async () => {
    const pool = new Pool({ ...cluster.clientConfig(), max: 1 });
    try {
      const db = knex({ client: 'pg', connectionPool: pool });
      assert.deepEqual(await db('items').where({ id: 1 }).first(), { id: 1, label: 'one' });
      await db.destroy();
      assert.equal(pool.ending, false, 'Knex did not end a pool it was given');
      assert.deepEqual((await pool.query<{ n: number }>('SELECT 1 AS n')).rows, [{ n: 1 }]);
      // A second Knex on the same pool works after the first is gone.
      const again = knex({ client: 'pg', connectionPool: pool });
      assert.equal((await again('items').count({ n: '*' }))[0]?.n, '2');
      await again.destroy();
    } finally {
      await pool.end();
    }
    assert.equal(pool.ended, true);
  });
});
