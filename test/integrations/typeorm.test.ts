// TypeORM builds its own pool from a driver module (`new driver.Pool(options)`); given
// pg-lifeline/pg it builds pg-lifeline's. Each case runs twice, against a real server (password and
// TLS): with pg-lifeline/pg, whose outcome is asserted, and with TypeORM's default driver (plain pg),
// whose errors are only counted and printed (`figure:` lines) for docs/integrations.md.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test, type TestContext } from 'node:test';
import { DataSource, EntitySchema, QueryFailedError, type EntityManager } from 'typeorm';
import * as lifelinePg from '../../src/pg.js';
import { ConnectionLostError, Pool } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { newTally, report, settle, watchProcess, type Tally } from './fault-tally.js';
import { SCHEMA, killBlocking, paymentCount } from './orm-shared.js';

interface Item {
  id: number;
  label: string;
}
interface Payment {
  ref: string;
  amount: number;
}

const ItemEntity = new EntitySchema<Item>({
  name: 'Item',
  tableName: 'items',
  columns: { id: { type: Number, primary: true }, label: { type: String } },
});
// `payments` has no key on purpose (a double commit shows as two rows); TypeORM needs one to be told.
const PaymentEntity = new EntitySchema<Payment>({
  name: 'Payment',
  tableName: 'payments',
  columns: { ref: { type: String, primary: true }, amount: { type: Number } },
});

const drivers = [
  { name: 'pg-lifeline/pg', driver: lifelinePg, lifeline: true },
  { name: 'TypeORM default (pg)', driver: undefined, lifeline: false },
] as const;
type Driver = (typeof drivers)[number];

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
  readonly ds: DataSource;
  readonly app: string;
  readonly tally: Tally;
}

/** Runs `fn` with an initialized DataSource on `driver` and always destroys it; prints the figures. */
async function withDataSource(t: TestContext, driver: Driver, extra: Record<string, unknown>, fn: (s: Session) => Promise<void>): Promise<Tally> {
  const app = `typeorm-${process.pid}-${++seq}`;
  const tally = newTally();
  const { host, port, user, password, database, ssl } = cluster.clientConfig();
  assert.ok(ssl, 'the default harness server serves TLS');
  const ds = new DataSource({
    type: 'postgres',
    driver: driver.driver,
    host,
    port,
    username: user,
    password,
    database,
    ssl,
    applicationName: app,
    poolSize: 3,
    // Spread into the pool's options by TypeORM: where pg-lifeline's own settings go.
    extra,
    entities: [ItemEntity, PaymentEntity],
    // TypeORM's default handler only logs; counted here instead.
    poolErrorHandler: (error: unknown) => void tally.pool.push(error),
  });
  const unwatch = watchProcess(tally);
  let pool: unknown;
  try {
    await ds.initialize();
    pool = (ds.driver as unknown as { master: unknown }).master;
    assert.equal(pool instanceof Pool, driver.lifeline, 'TypeORM built its pool from the driver it was given');
    await fn({ ds, app, tally });
  } finally {
    unwatch();
    if (ds.isInitialized) await ds.destroy();
    report(t, 'TypeORM', driver.name, tally);
  }
  // TypeORM built the pool, so dataSource.destroy() ends it (pool.end with a callback).
  if (pool instanceof Pool) assert.equal(pool.ended, true);
  if (driver.lifeline) assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  return tally;
}

/** Checks `n` connections out at once and gives them back, so that `n` backends exist. */
async function warm({ ds, app }: Session, n: number): Promise<void> {
  const runners = Array.from({ length: n }, () => ds.createQueryRunner());
  await Promise.all(runners.map((runner) => runner.connect()));
  await Promise.all(runners.map((runner) => runner.release()));
  assert.equal((await cluster.backendPids(app)).length, n);
}

/** Repository reads and writes, a raw query and a transaction at once, so each takes its own connection. */
function mixedWork({ ds, tally }: Session, id: number): Promise<readonly [Item | null | undefined, unknown, string | undefined, unknown]> {
  const items = ds.getRepository(ItemEntity);
  return settle(tally, [
    items.findOneBy({ id: 2 }),
    items.insert({ id, label: 'inserted' }),
    ds.transaction(async (m) => {
      await m.update(ItemEntity, { id: 1 }, { label: 'updated' });
      return (await m.findOneByOrFail(ItemEntity, { id: 1 })).label;
    }),
    ds.query('SELECT count(*)::int AS n FROM items WHERE id <= 2'),
  ] as const);
}

function checkMixed([found, , label, counted]: Awaited<ReturnType<typeof mixedWork>>, id: number): Promise<void> {
  assert.deepEqual(found, { id: 2, label: 'two' });
  assert.equal(label, 'updated');
  assert.deepEqual(counted, [{ n: 2 }]);
  return cluster.query<{ label: string }>('SELECT label FROM items WHERE id = $1', [id]).then((rows) => assert.deepEqual(rows, [{ label: 'inserted' }]));
}

async function backendPid(m: EntityManager): Promise<number> {
  const rows = (await m.query('SELECT pg_backend_pid() AS pid')) as { pid: number }[];
  const pid = rows[0]?.pid;
  assert.ok(typeof pid === 'number');
  return pid;
}

for (const driver of drivers) {
  describe(`TypeORM on ${driver.name}`, () => {
    test('ordinary use: repository insert and select, raw query, transaction', async (t) => {
      await withDataSource(t, driver, {}, async ({ ds }) => {
        const items = ds.getRepository(ItemEntity);
        await items.insert({ id: 3, label: 'three' });
        assert.deepEqual(await items.find({ order: { id: 'ASC' } }), [
          { id: 1, label: 'one' },
          { id: 2, label: 'two' },
          { id: 3, label: 'three' },
        ]);
        assert.deepEqual(await ds.query('SELECT label FROM items WHERE id = $1', [3]), [{ label: 'three' }]);
        await ds.transaction(async (m) => {
          await m.insert(PaymentEntity, { ref: 'kept', amount: 5 });
        });
        assert.equal(await paymentCount(cluster, 'kept'), 1);
      });
    });

    test('every idle backend killed: the next queries', async (t) => {
      const tally = await withDataSource(t, driver, {}, async (s) => {
        await warm(s, 3);
        assert.equal(await cluster.terminateBackends(s.app), 3);
        const results = await mixedWork(s, 10);
        if (driver.lifeline) await checkMixed(results, 10);
      });
      if (driver.lifeline) assert.deepEqual(tally.app, []);
    });

    test('every idle backend killed before the pool can have read it: the reads sent on them, then the next ones', async (t) => {
      // TypeORM runs every statement on a checked-out client, where the pool cannot move a statement
      // to a new connection: those that went out on a dead one fail (even with idempotent: true,
      // which applies to pool.query). What the pool still owes: typed errors, and healthy next reads.
      const tally = await withDataSource(t, driver, { idempotent: true }, async (s) => {
        await warm(s, 3);
        killBlocking(await cluster.backendPids(s.app));
        const items = s.ds.getRepository(ItemEntity);
        const reads = (): Promise<readonly unknown[]> => settle(s.tally, [items.findOneBy({ id: 1 }), items.findOneBy({ id: 2 }), s.ds.query('SELECT count(*)::int AS n FROM items')]);
        await reads();
        const failed = s.tally.app.length;
        const next = await reads();
        if (driver.lifeline) {
          assert.equal(failed, 3, 'each read met a dead connection');
          for (const error of s.tally.app) {
            assert.ok(error instanceof QueryFailedError, String(error));
            assert.ok(error.driverError instanceof ConnectionLostError, String(error.driverError));
            assert.equal(error.driverError.diagnosis.cause, 'admin-terminated');
          }
          assert.deepEqual(next, [{ id: 1, label: 'one' }, { id: 2, label: 'two' }, [{ n: 2 }]]);
        }
      });
      if (driver.lifeline) assert.equal(tally.app.length, 3, 'the next reads all succeeded');
    });

    test('fast restart: the next queries', async (t) => {
      const tally = await withDataSource(t, driver, {}, async (s) => {
        await warm(s, 3);
        await cluster.restart('fast');
        const results = await mixedWork(s, 11);
        if (driver.lifeline) await checkMixed(results, 11);
      });
      if (driver.lifeline) assert.deepEqual(tally.app, []);
    });

    test("connection killed inside TypeORM's transaction: rolled back, nothing half-saved, the app's retry commits once", async (t) => {
      const tally = await withDataSource(t, driver, {}, async (s) => {
        const ref = 'killed';
        let attempts = 0;
        const pay = (): Promise<void> =>
          s.ds.transaction(async (m) => {
            attempts++;
            await m.insert(PaymentEntity, { ref, amount: 10 });
            if (attempts === 1) {
              const pid = await backendPid(m);
              await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
              await waitFor(`backend ${pid} to exit`, async () => !(await cluster.backendPids(s.app)).includes(pid));
            }
            await m.insert(ItemEntity, { id: 20, label: ref });
          });
        await settle(s.tally, [pay()]);
        const afterKill = await paymentCount(cluster, ref);
        await settle(s.tally, [pay()]);
        if (driver.lifeline) {
          // The first try rejected and, with its session, took its first insert with it.
          assert.equal(s.tally.app.length, 1, 'the killed transaction rejected');
          assert.equal(afterKill, 0, 'the insert before the kill was rolled back');
          assert.equal(attempts, 2);
          assert.equal(await paymentCount(cluster, ref), 1);
          assert.deepEqual(await cluster.query('SELECT label FROM items WHERE id = 20'), [{ label: ref }]);
        }
      });
      if (driver.lifeline) assert.equal(tally.app.length, 1, 'only the killed transaction failed');
    });
  });
}
