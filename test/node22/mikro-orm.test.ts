// MikroORM 7 builds its pool itself, in its connection's createKyselyDialect; mikroOrmDriver overrides
// that method to build pg-lifeline's Pool from MikroORM's own mapped options. Each case runs twice,
// against a real server (password and TLS): on mikroOrmDriver, whose outcome is asserted, and on
// MikroORM's default pool (plain pg), whose errors are only counted and printed (`figure:` lines) for
// docs/integrations-mikro-orm.md.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, beforeEach, describe, test, type TestContext } from 'node:test';
import { DriverException, EntitySchema, RequestContext, UniqueConstraintViolationException, MikroORM, PostgreSqlConnection, PostgreSqlDriver, type EntityManager } from '@mikro-orm/postgresql';
import { PostgresDialect } from 'kysely';
import pg from 'pg';
import { ConfigError, ConnectionLostError, OutcomeUnknownError, Pool, mikroOrmDriver } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { newTally, report, settle, watchProcess, type Tally } from '../integrations/fault-tally.js';
import { SCHEMA, killBlocking, paymentCount } from '../integrations/orm-shared.js';

interface Item {
  id: number;
  label: string;
}
interface Payment {
  ref: string;
  amount: number;
}
interface Typed {
  id: number;
  big: bigint;
  day: string;
  price: string;
  at: Date;
}

// pg-cursor ships no types; the driver only passes it on to Kysely.
const Cursor: unknown = createRequire(import.meta.url)('pg-cursor');

const ItemEntity = new EntitySchema<Item>({
  name: 'Item',
  tableName: 'items',
  properties: { id: { type: 'integer', primary: true }, label: { type: 'string' } },
});
// `payments` has no key on purpose (a double commit shows as two rows); MikroORM needs one to be told.
const PaymentEntity = new EntitySchema<Payment>({
  name: 'Payment',
  tableName: 'payments',
  properties: { ref: { type: 'string', primary: true }, amount: { type: 'integer' } },
});
const TypedEntity = new EntitySchema<Typed>({
  name: 'Typed',
  tableName: 'typed',
  properties: {
    id: { type: 'integer', primary: true },
    big: { type: 'bigint' },
    day: { type: 'date' },
    price: { type: 'decimal' },
    at: { type: 'datetime' },
  },
});

const drivers = [
  { name: 'mikroOrmDriver (pg-lifeline)', driver: mikroOrmDriver(PostgreSqlDriver, { dialect: PostgresDialect, cursor: Cursor }), lifeline: true },
  { name: 'MikroORM default (pg)', driver: PostgreSqlDriver, lifeline: false },
] as const;
type Driver = (typeof drivers)[number];

let cluster: PgCluster;
let seq = 0;

before(async () => {
  cluster = await PgCluster.start();
  await cluster.query(`${SCHEMA} CREATE TABLE typed (id int PRIMARY KEY, big bigint NOT NULL, day date NOT NULL, price numeric(10,2) NOT NULL, at timestamptz NOT NULL);`);
});

after(async () => {
  await cluster?.destroy();
});

beforeEach(async () => {
  await cluster.query(`TRUNCATE items, payments, typed; INSERT INTO items VALUES (1, 'one'), (2, 'two')`);
});

interface Session {
  readonly orm: MikroORM;
  readonly app: string;
  readonly tally: Tally;
  readonly pool: pg.Pool;
}

/** Runs `fn` with an initialized MikroORM on `driver` and always closes it; prints the figures. */
async function withOrm(t: TestContext, driver: Driver, driverOptions: Record<string, unknown>, fn: (s: Session) => Promise<void>): Promise<Tally> {
  const app = `mikro-${process.pid}-${++seq}`;
  const tally = newTally();
  const { host, port, user, password, database, ssl } = cluster.clientConfig();
  assert.ok(ssl, 'the default harness server serves TLS');
  const unwatch = watchProcess(tally);
  let orm: MikroORM | undefined;
  let pool: pg.Pool | undefined;
  try {
    orm = await MikroORM.init({
      driver: driver.driver,
      host,
      port,
      user,
      password,
      dbName: database,
      pool: { max: 3 },
      // Merged into the pool's options by MikroORM's mapOptions: where pg-lifeline's own settings go.
      driverOptions: { ssl, application_name: app, ...driverOptions },
      entities: [ItemEntity, PaymentEntity, TypedEntity],
      debug: false,
    });
    pool = await orm.em.getConnection().getNativeClient();
    assert.ok(pool instanceof pg.Pool, "getNativeClient() gives a pg.Pool on both drivers");
    assert.equal(pool instanceof Pool, driver.lifeline, 'MikroORM built its pool through the driver it was given');
    // The idle deaths MikroORM's own listener logs as warnings, counted here.
    pool.on('error', (error: unknown) => void tally.pool.push(error));
    await fn({ orm, app, tally, pool });
  } finally {
    unwatch();
    if (orm !== undefined) await closeBounded(t, driver, orm);
    report(t, 'MikroORM', driver.name, tally);
  }
  // MikroORM built the pool, so orm.close() ends it (through Kysely's destroy).
  if (pool instanceof Pool) assert.equal(pool.ended, true);
  if (driver.lifeline) assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  return tally;
}

/**
 * orm.close() ends the pool, which waits for every checked-out connection. On MikroORM's own pool a
 * connection left checked out makes it wait for good, so the baseline's wait is cut off and reported.
 */
async function closeBounded(t: TestContext, driver: Driver, orm: MikroORM): Promise<void> {
  const closing = orm.close();
  if (driver.lifeline) return closing;
  let timer: NodeJS.Timeout | undefined;
  const cutOff = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), 3000)));
  const outcome = await Promise.race([closing.then(() => 'closed' as const), cutOff]);
  clearTimeout(timer);
  if (outcome === 'hung') t.diagnostic(`figure: MikroORM | ${t.name} | ${driver.name} | orm.close() still waiting after 3 s`);
}

/** Checks `n` connections out at once and gives them back, so that `n` backends exist. */
async function warm({ pool, app }: Session, n: number): Promise<void> {
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()));
  for (const client of clients) client.release();
  assert.equal((await cluster.backendPids(app)).length, n);
}

/** An entity read, an entity write, a raw query and a transaction at once, so each takes its own connection. */
function mixedWork({ orm, tally }: Session, id: number): Promise<readonly [Item | null | undefined, unknown, string | undefined, unknown]> {
  return settle(tally, [
    orm.em.fork().findOne(ItemEntity, { id: 2 }),
    orm.em.fork().insert(ItemEntity, { id, label: 'inserted' }),
    orm.em.fork().transactional(async (em) => {
      const item = await em.findOneOrFail(ItemEntity, { id: 1 });
      item.label = 'updated';
      await em.flush();
      const rows = await em.getConnection().execute<{ label: string }[]>('SELECT label FROM items WHERE id = 1', [], 'all', em.getTransactionContext());
      return rows[0]?.label;
    }),
    orm.em.getConnection().execute('SELECT count(*)::int AS n FROM items WHERE id <= 2'),
  ] as const);
}

async function checkMixed([found, , label, counted]: Awaited<ReturnType<typeof mixedWork>>, id: number): Promise<void> {
  assert.deepEqual({ ...found }, { id: 2, label: 'two' });
  assert.equal(label, 'updated');
  assert.deepEqual(counted, [{ n: 2 }]);
  assert.deepEqual(await cluster.query('SELECT label FROM items WHERE id = $1', [id]), [{ label: 'inserted' }]);
}

async function backendPid(em: EntityManager): Promise<number> {
  const rows = await em.getConnection().execute<{ pid: number }[]>('SELECT pg_backend_pid() AS pid', [], 'all', em.getTransactionContext());
  const pid = rows[0]?.pid;
  assert.ok(typeof pid === 'number');
  return pid;
}

test('runs on Node.js 22 or later, as MikroORM 7 requires', () => {
  assert.ok(Number(process.versions.node.split('.')[0]) >= 22, process.versions.node);
});

for (const driver of drivers) {
  describe(`MikroORM on ${driver.name}`, () => {
    test("ordinary use: entity insert and find, MikroORM's type mapping, a transaction", async (t) => {
      await withOrm(t, driver, {}, async ({ orm }) => {
        const connection = orm.em.getConnection();
        assert.ok(connection instanceof PostgreSqlConnection, "MikroORM's instanceof check on its connection class");
        assert.ok(orm.em.getDriver() instanceof PostgreSqlDriver);
        const em = orm.em.fork();
        em.create(ItemEntity, { id: 3, label: 'three' });
        em.create(TypedEntity, { id: 1, big: 9007199254740993n, day: '2024-02-29', price: '12.50', at: new Date('2024-02-29T23:30:00.000Z') });
        await em.flush();
        const read = orm.em.fork();
        assert.deepEqual((await read.find(ItemEntity, {}, { orderBy: { id: 'asc' } })).map((i) => ({ ...i })), [
          { id: 1, label: 'one' },
          { id: 2, label: 'two' },
          { id: 3, label: 'three' },
        ]);
        const typed = await read.findOneOrFail(TypedEntity, { id: 1 });
        // MikroORM's own parsers leave date and timestamptz as text, and its types map them: a date
        // stays the calendar day whatever the process's time zone, bigint keeps every digit.
        assert.equal(typed.big, 9007199254740993n);
        assert.equal(typed.day, '2024-02-29');
        assert.equal(typed.price, '12.50');
        assert.ok(typed.at instanceof Date);
        assert.equal(typed.at.toISOString(), '2024-02-29T23:30:00.000Z');
        const raw = await connection.execute<{ day: unknown; at: unknown }[]>('SELECT day, at FROM typed');
        assert.equal(typeof raw[0]?.day, 'string', "the date parser is MikroORM's (pg's own gives a Date)");
        assert.equal(typeof raw[0]?.at, 'string', "the timestamptz parser is MikroORM's");
        await orm.em.fork().transactional(async (tx) => {
          tx.create(PaymentEntity, { ref: 'kept', amount: 5 });
        });
        assert.equal(await paymentCount(cluster, 'kept'), 1);
        // MikroORM maps the error's SQLSTATE to its own classes; pg-lifeline keeps pg's code.
        await assert.rejects(orm.em.fork().insert(ItemEntity, { id: 1, label: 'again' }), UniqueConstraintViolationException);
        let streamed = 0;
        for await (const item of orm.em.fork().stream(ItemEntity)) if (item.id > 0) streamed++;
        assert.equal(streamed, 3, 'em.stream goes through the cursor');
      });
    });

    test('every idle backend killed: the next calls', async (t) => {
      const tally = await withOrm(t, driver, {}, async (s) => {
        await warm(s, 3);
        assert.equal(await cluster.terminateBackends(s.app), 3);
        await waitFor('the pool to hear of the deaths', () => s.tally.pool.length === 3);
        const results = await mixedWork(s, 10);
        if (driver.lifeline) await checkMixed(results, 10);
      });
      if (driver.lifeline) assert.deepEqual(tally.app, []);
    });

    test('every idle backend killed before the pool can have read it: the reads sent on them, then the next ones', async (t) => {
      // Kysely runs every statement on a checked-out client, where the pool cannot move a statement
      // to a new connection: those that went out on a dead one fail. What the pool still owes:
      // typed errors, and healthy next reads.
      const tally = await withOrm(t, driver, {}, async (s) => {
        await warm(s, 3);
        killBlocking(await cluster.backendPids(s.app));
        const reads = (): Promise<readonly unknown[]> =>
          settle(s.tally, [
            s.orm.em.fork().findOne(ItemEntity, { id: 1 }),
            s.orm.em.fork().findOne(ItemEntity, { id: 2 }),
            s.orm.em.getConnection().execute('SELECT count(*)::int AS n FROM items'),
          ]);
        await reads();
        const failed = s.tally.app.length;
        const next = await reads();
        if (driver.lifeline) {
          assert.equal(failed, 3, 'each read met a dead connection');
          for (const error of s.tally.app) {
            // MikroORM rethrows a driver's error as its own DriverException, copying the error's fields
            // (not its class); a raw `execute` passes pg-lifeline's error through as it is.
            assert.ok(error instanceof DriverException || error instanceof OutcomeUnknownError, String(error));
            assert.equal((error as OutcomeUnknownError).lifelineCode, 'PGL_OUTCOME_UNKNOWN');
            assert.equal((error as OutcomeUnknownError).diagnosis.cause, 'admin-terminated');
          }
          assert.deepEqual(next.slice(0, 2).map((i) => ({ ...(i as Item) })), [{ id: 1, label: 'one' }, { id: 2, label: 'two' }]);
          assert.deepEqual(next[2], [{ n: 2 }]);
        }
      });
      if (driver.lifeline) assert.equal(tally.app.length, 3, 'the next reads all succeeded');
    });

    test('fast restart: the next calls', async (t) => {
      const tally = await withOrm(t, driver, {}, async (s) => {
        await warm(s, 3);
        await cluster.restart('fast');
        const results = await mixedWork(s, 11);
        if (driver.lifeline) await checkMixed(results, 11);
      });
      if (driver.lifeline) assert.deepEqual(tally.app, []);
    });

    test("connection killed inside em.transactional: rolled back, nothing half-saved, the app's retry commits once", async (t) => {
      const tally = await withOrm(t, driver, {}, async (s) => {
        const ref = 'killed';
        let attempts = 0;
        const pay = (): Promise<void> =>
          s.orm.em.fork().transactional(async (em) => {
            attempts++;
            await em.insert(PaymentEntity, { ref, amount: 10 });
            if (attempts === 1) {
              const pid = await backendPid(em);
              await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
              await waitFor(`backend ${pid} to exit`, async () => !(await cluster.backendPids(s.app)).includes(pid));
            }
            await em.insert(ItemEntity, { id: 20, label: ref });
          });
        await settle(s.tally, [pay()]);
        const afterKill = await paymentCount(cluster, ref);
        await settle(s.tally, [pay()]);
        // Kysely gives a transaction's connection back only after a ROLLBACK that succeeded; on
        // MikroORM's own pool the dead one stays checked out. mikroOrmDriver gives it back.
        if (driver.lifeline) await waitFor('every connection back in the pool', () => s.pool.idleCount === s.pool.totalCount);
        const stuck = s.pool.totalCount - s.pool.idleCount;
        const saved = await paymentCount(cluster, ref);
        t.diagnostic(`figure: MikroORM | ${t.name} | ${driver.name} | connections left checked out ${stuck} | rows after the kill ${afterKill}, after the retry ${saved}`);
        if (driver.lifeline) {
          assert.equal(s.tally.app.length, 1, 'the killed transaction rejected');
          const error = s.tally.app[0];
          assert.ok(error instanceof DriverException, String(error));
          // The fields of pg-lifeline's ConnectionLostError survive MikroORM's wrapping.
          const lost = error as unknown as ConnectionLostError;
          assert.equal(lost.lifelineCode, 'PGL_CONNECTION_LOST');
          assert.equal(lost.outcome, 'not-applied');
          assert.equal(lost.diagnosis.cause, 'admin-terminated');
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

test("for comparison: a PostgresDialect over pg-lifeline's Pool in driverOptions skips MikroORM's type parsers", async (t) => {
  const { host, port, user, password, database, ssl } = cluster.clientConfig();
  const pool = new Pool({ host, port, user, password, database, ssl, application_name: `mikro-${process.pid}-dialect` });
  const orm = await MikroORM.init({ dbName: database, driverOptions: new PostgresDialect({ pool }), entities: [ItemEntity, PaymentEntity, TypedEntity] });
  try {
    assert.equal(await orm.em.getConnection().getNativeClient().then(() => 'given', () => 'refused'), 'refused', 'getNativeClient() refuses: the pool is not MikroORM\'s');
    await cluster.query(`INSERT INTO typed VALUES (1, 1, '2024-02-29', 1.5, '2024-02-29T23:30:00Z')`);
    const raw = await orm.em.getConnection().execute<{ day: unknown }[]>('SELECT day FROM typed');
    // pg's global parser turns a date into a Date at local midnight, where MikroORM's keeps the text.
    assert.ok(raw[0]?.day instanceof Date, String(raw[0]?.day));
    const typed = await orm.em.fork().findOneOrFail(TypedEntity, { id: 1 });
    t.diagnostic(`figure: MikroORM | driverOptions: PostgresDialect | raw date column ${Object.prototype.toString.call(raw[0]?.day)} | entity date ${JSON.stringify(typed.day)} (TZ=${process.env['TZ'] ?? 'unset'})`);
  } finally {
    await orm.close();
  }
  assert.equal(pool.ended, true, 'orm.close() ends a pool handed over inside a dialect too');
});

test("a bad pg-lifeline option in driverOptions fails the first connect with pg-lifeline's ConfigError", async () => {
  const { host, port, user, password, database, ssl } = cluster.clientConfig();
  const driver = drivers[0].driver;
  // MikroORM 7 connects lazily: init() builds no pool, the first query or orm.connect() does.
  const orm = await MikroORM.init({ driver, host, port, user, password, dbName: database, driverOptions: { ssl, shutdownTimeoutMillis: -1 }, entities: [ItemEntity] });
  // An entity call wraps it in MikroORM's DriverException, which keeps its fields; orm.connect() does not wrap.
  const isConfigError = (error: unknown): boolean =>
    (error as ConfigError).lifelineCode === 'PGL_CONFIG' && (error as ConfigError).option === 'shutdownTimeoutMillis';
  await assert.rejects(orm.em.fork().findOne(ItemEntity, { id: 1 }), (error) => error instanceof DriverException && isConfigError(error));
  await assert.rejects(orm.connect(), (error) => error instanceof ConfigError && isConfigError(error));
  await orm.close();
});

for (const driver of drivers) {
  test(`MikroORM's connection hooks and sessionContext: 'connection' on ${driver.name}`, async (t) => {
    const { host, port, user, password, database, ssl } = cluster.clientConfig();
    const created: unknown[] = [];
    let reserved = 0;
    const orm = await MikroORM.init({
      driver: driver.driver,
      host,
      port,
      user,
      password,
      dbName: database,
      pool: { max: 1 },
      driverOptions: { ssl, application_name: `mikro-${process.pid}-hooks` },
      entities: [ItemEntity],
      sessionContext: 'connection',
      onCreateConnection: async (connection) => void created.push(connection),
      onReserveConnection: async () => void reserved++,
    });
    try {
      const em = orm.em.fork();
      em.setSessionContext({ variables: { 'app.tenant': '42' } });
      const tenant = await RequestContext.create(em, () =>
        em.getConnection().execute<{ tenant: string | null }[]>(`SELECT current_setting('app.tenant', true) AS tenant`),
      );
      assert.deepEqual(tenant, [{ tenant: '42' }], "MikroORM applied the EM's session variables on reserve");
      // Outside that context, the reserve hook resets the session: the variable does not leak.
      const after = await orm.em.fork().getConnection().execute<{ tenant: string | null }[]>(`SELECT nullif(current_setting('app.tenant', true), '') AS tenant`);
      assert.deepEqual(after, [{ tenant: null }]);
      t.diagnostic(`figure: MikroORM | hooks | ${driver.name} | 1 connection, ${reserved} reserves, onCreateConnection ran ${created.length}x`);
      // Kysely knows a connection by the object pool.connect() gives. pg.Pool gives the same client
      // each time; pg-lifeline gives a new lease per checkout, so Kysely's "new connection" hook runs
      // on every checkout there. Per-connection set-up belongs in pg-lifeline's onConnect.
      assert.equal(created.length, driver.lifeline ? reserved : 1);
    } finally {
      await orm.close();
    }
  });
}
