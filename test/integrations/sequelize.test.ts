// Sequelize 6 and 7 over pg-lifeline/pg (`dialectModule` / `pgModule`): Sequelize keeps its own
// pool and builds its clients from the module, so what carries over is pg-lifeline's Client. Each
// fault runs with pg-lifeline/pg, whose outcome is asserted, and with Sequelize's default (plain
// pg), whose errors are only counted and printed (`figure:` lines) for docs/integrations-sequelize.md.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test, type TestContext } from 'node:test';
import { Sequelize as Sequelize6 } from 'sequelize';
import { Sequelize as Sequelize7 } from '@sequelize/core';
import { PostgresDialect } from '@sequelize/postgres';
import * as lifelinePg from '../../src/pg.js';
import { Client, ConnectionLostError, OutcomeUnknownError, sequelizeRetryMatch } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { ReplicaSet } from '../harness/replication.js';
import { FaultProxy } from '../harness/proxy.js';
import { settleWithin, waitFor } from '../harness/wait.js';
import { newTally, report, settle, watchProcess, type Tally } from './fault-tally.js';
import { SCHEMA, holdTransactions, killBlocking, paymentCount } from './orm-shared.js';

let cluster: PgCluster;
let proxy: FaultProxy;
let seq = 0;

before(async () => {
  cluster = await PgCluster.start();
  await cluster.query(SCHEMA);
  proxy = await FaultProxy.start({ host: cluster.host, port: cluster.port });
});

after(async () => {
  await proxy?.close();
  await cluster?.destroy();
});

beforeEach(async () => {
  proxy.passThrough();
  await cluster.query(`TRUNCATE items, payments; INSERT INTO items VALUES (1, 'one'), (2, 'two')`);
});

/** What the cases use of Sequelize; the same calls exist in 6 and 7. */
interface Db {
  query(sql: string, options?: Record<string, unknown>): Promise<unknown>;
  transaction<T>(fn: (t: unknown) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

interface Setup {
  readonly name: string;
  readonly version: 6 | 7;
  /** The pg-shaped module, or undefined for Sequelize's own `pg`. */
  readonly module: Record<string, unknown> | undefined;
}

const setups: Setup[] = [6, 7].flatMap((version) => [
  { name: `Sequelize ${version} + pg-lifeline/pg`, version: version as 6 | 7, module: lifelinePg as unknown as Record<string, unknown> },
  { name: `Sequelize ${version} default (pg)`, version: version as 6 | 7, module: undefined },
]);

interface Session {
  readonly db: Db;
  readonly app: string;
  readonly tally: Tally;
}

interface Options {
  /** Through the fault proxy instead of straight to the server. */
  readonly viaProxy?: boolean;
  readonly retry?: Record<string, unknown>;
  /** Replaces the module's Client (pg-lifeline setups only). */
  readonly client?: typeof Client;
  /** The server Sequelize is pointed at; the suite's own by default. */
  readonly server?: PgCluster;
}

function open(setup: Setup, app: string, options: Options): Db {
  const config = (options.server ?? cluster).clientConfig();
  const port = options.viaProxy === true ? proxy.port : config.port;
  const module = setup.module && options.client ? { ...setup.module, Client: options.client } : setup.module;
  // Retries off unless the case turns them on: Sequelize 6 and 7 retry 5 times on SQLITE_BUSY only.
  const retry = options.retry ?? { max: 1 };
  if (setup.version === 6) {
    return new Sequelize6(config.database, config.user, config.password, {
      host: config.host,
      port,
      dialect: 'postgres',
      ...(module ? { dialectModule: module } : {}),
      dialectOptions: { ssl: config.ssl, application_name: app },
      pool: { max: 3, min: 0 },
      logging: false,
      retry: retry as never,
    }) as unknown as Db;
  }
  return new Sequelize7({
    dialect: PostgresDialect,
    host: config.host,
    port,
    user: config.user,
    password: config.password,
    database: config.database,
    ssl: config.ssl as never,
    application_name: app,
    ...(module ? { pgModule: module as never } : {}),
    pool: { max: 3, min: 0 },
    logging: false,
    retry: retry as never,
  }) as unknown as Db;
}

async function withDb(t: TestContext, setup: Setup, options: Options, fn: (s: Session) => Promise<void>): Promise<Tally> {
  const app = `sqlz-${process.pid}-${++seq}`;
  const tally = newTally();
  const db = open(setup, app, options);
  const unwatch = watchProcess(tally);
  try {
    await fn({ db, app, tally });
  } finally {
    unwatch();
    proxy.passThrough();
    await settleWithin(db.close(), 2000);
    report(t, `Sequelize ${setup.version}`, setup.module ? 'pg-lifeline/pg' : 'default (pg)', tally);
  }
  if (setup.module) assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  return tally;
}

/** Holds `n` connections at once (each in a transaction) so that `n` backends exist. */
async function warm({ db, app }: Session, n: number): Promise<number[]> {
  await holdTransactions(n, (body) => db.transaction(body));
  const pids = await cluster.backendPids(app);
  assert.equal(pids.length, n);
  return pids;
}

const select = { type: 'SELECT' };

function reads({ db, tally }: Session): Promise<readonly unknown[]> {
  return settle(tally, [
    db.query('SELECT label FROM items WHERE id = 1', select),
    db.query('SELECT label FROM items WHERE id = 2', select),
    db.query('SELECT count(*)::int AS n FROM items', select),
  ]);
}

const READS = [[{ label: 'one' }], [{ label: 'two' }], [{ n: 2 }]];

/** The driver's error inside Sequelize's. */
function original(error: unknown): unknown {
  const e = error as { original?: unknown; parent?: unknown };
  return e.original ?? e.parent ?? error;
}

for (const setup of setups) {
  const lifeline = setup.module !== undefined;
  describe(setup.name, () => {
    test('ordinary use: insert, select, transaction', async (t) => {
      await withDb(t, setup, {}, async ({ db }) => {
        await db.query(`INSERT INTO items VALUES (3, 'three')`);
        assert.deepEqual(await db.query('SELECT id, label FROM items ORDER BY id', select), [
          { id: 1, label: 'one' },
          { id: 2, label: 'two' },
          { id: 3, label: 'three' },
        ]);
        await db.transaction(async (transaction) => db.query(`INSERT INTO payments VALUES ('kept', 5)`, { transaction }));
        assert.equal(await paymentCount(cluster, 'kept'), 1);
      });
    });

    test('every idle backend killed: the next calls', async (t) => {
      const tally = await withDb(t, setup, {}, async (s) => {
        await warm(s, 3);
        assert.equal(await cluster.terminateBackends(s.app), 3);
        const results = await reads(s);
        if (lifeline) assert.deepEqual(results, READS);
      });
      if (lifeline) assert.deepEqual(tally.app, []);
    });

    test('every idle backend killed and not yet read: the calls sent on them, then the next ones (retry.match on)', async (t) => {
      // Sequelize's pool hands out connections it has not seen die: the reads sent on them fail,
      // and may have run. A pg-lifeline Client that met its end refuses the next statement unsent,
      // which sequelizeRetryMatch retries on a fresh connection; plain pg sends it and loses it.
      await withDb(t, setup, { retry: { max: 3, backoffBase: 10, match: [sequelizeRetryMatch] } }, async (s) => {
        killBlocking(await warm(s, 3));
        await reads(s);
        const failed = s.tally.app.length;
        const next = await reads(s);
        if (lifeline) {
          assert.equal(failed, 3, 'each read met a dead connection');
          for (const error of s.tally.app) {
            const lost = original(error);
            assert.ok(lost instanceof ConnectionLostError, String(lost));
            assert.equal(lost.code, '57P01', "pg's code is kept");
            assert.equal(lost.diagnosis.cause, 'admin-terminated');
          }
          assert.deepEqual(next, READS, 'the next reads succeeded');
        }
      });
    });

    test('fast restart: the next calls', async (t) => {
      const tally = await withDb(t, setup, {}, async (s) => {
        await warm(s, 3);
        await cluster.restart('fast');
        const results = await reads(s);
        if (lifeline) assert.deepEqual(results, READS);
      });
      if (lifeline) assert.deepEqual(tally.app, []);
    });

    test("connection killed inside sequelize.transaction: rolled back, nothing half-saved, the app's retry commits once", async (t) => {
      await withDb(t, setup, {}, async (s) => {
        const ref = 'killed';
        let attempts = 0;
        const pay = (): Promise<unknown> =>
          s.db.transaction(async (transaction) => {
            attempts++;
            await s.db.query(`INSERT INTO payments VALUES ('${ref}', 10)`, { transaction });
            if (attempts === 1) {
              const rows = (await s.db.query('SELECT pg_backend_pid() AS pid', { ...select, transaction })) as { pid: number }[];
              const pid = rows[0]?.pid;
              await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
              await waitFor(`backend ${pid} to exit`, async () => !(await cluster.backendPids(s.app)).includes(pid as number));
            }
            await s.db.query(`INSERT INTO items VALUES (20, '${ref}')`, { transaction });
          });
        await settle(s.tally, [pay()]);
        const afterKill = await paymentCount(cluster, ref);
        await settle(s.tally, [pay()]);
        if (lifeline) {
          assert.equal(s.tally.app.length, 1, 'only the killed transaction rejected');
          const lost = original(s.tally.app[0]);
          assert.ok(lost instanceof ConnectionLostError, String(lost));
          assert.equal(lost.diagnosis.cause, 'admin-terminated', 'explained by the error pg emitted when the session ended');
          assert.equal(afterKill, 0, 'the insert before the kill was rolled back');
          assert.equal(attempts, 2);
          assert.equal(await paymentCount(cluster, ref), 1);
          assert.deepEqual(await cluster.query('SELECT label FROM items WHERE id = 20'), [{ label: ref }]);
        }
      });
    });

    describe('retry: { match: [sequelizeRetryMatch] }', () => {
      const counted = (): { retries: number; retry: Record<string, unknown> } => {
        const state = { retries: 0, retry: {} as Record<string, unknown> };
        state.retry = {
          max: 3,
          backoffBase: 10,
          match: [sequelizeRetryMatch],
          report: (message: string) => {
            if (message.startsWith('Retrying')) state.retries++;
          },
        };
        return state;
      };

      test('a unique violation is not retried', async (t) => {
        const c = counted();
        await withDb(t, setup, { retry: c.retry }, async (s) => {
          await settle(s.tally, [s.db.query(`INSERT INTO items VALUES (1, 'again')`)]);
          assert.equal(s.tally.app.length, 1);
          assert.equal((original(s.tally.app[0]) as { code?: unknown }).code, '23505');
          assert.equal(c.retries, 0);
          assert.deepEqual(await cluster.query('SELECT label FROM items WHERE id = 1'), [{ label: 'one' }]);
        });
      });

      test('an insert whose connection died mid-statement (outcome unknown) is not retried', async (t) => {
        const c = counted();
        await withDb(t, setup, { retry: c.retry }, async (s) => {
          const insert = settle(s.tally, [s.db.query(`INSERT INTO payments SELECT 'unknown', 1 FROM pg_sleep(30)`)]);
          const pid = await waitFor('the insert to run', async () => {
            const rows = await cluster.query<{ pid: number }>(
              `SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE 'INSERT INTO payments%'`,
              [s.app],
            );
            return rows[0]?.pid;
          });
          await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
          await insert;
          assert.equal(s.tally.app.length, 1);
          if (lifeline) assert.ok(original(s.tally.app[0]) instanceof OutcomeUnknownError, String(original(s.tally.app[0])));
          assert.equal(c.retries, 0);
          assert.equal(await paymentCount(cluster, 'unknown'), 0, 'not run a second time');
        });
      });

      test('a connection refused before anything was sent is retried', async (t) => {
        const c = counted();
        await proxy.refuse();
        const retry = { ...c.retry, report: (message: string) => {
          (c.retry['report'] as (m: string) => void)(message);
          if (message.startsWith('Retrying')) proxy.passThrough();
        } };
        const tally = await withDb(t, setup, { viaProxy: true, retry }, async (s) => {
          const [rows] = await settle(s.tally, [s.db.query(`INSERT INTO payments VALUES ('refused', 1) RETURNING ref`, select)]);
          assert.equal(c.retries, 1);
          assert.deepEqual(rows, [{ ref: 'refused' }]);
          assert.equal(await paymentCount(cluster, 'refused'), 1);
        });
        assert.deepEqual(tally.app, []);
      });
    });

    test('a blackholed network under a statement: noticed, not a hang', async (t) => {
      const client = lifeline ? Client.configure({ monitorGraceMillis: 300, monitorDetectionMillis: 1000 }) : undefined;
      await withDb(t, setup, { viaProxy: true, ...(client ? { client } : {}) }, async (s) => {
        assert.deepEqual(await s.db.query('SELECT 1 AS n', select), [{ n: 1 }]);
        proxy.blackhole();
        // pg.Client waits for the kernel (minutes), so its wait is cut at 4 s; ours is bounded by the watch alone, not a race with that cut.
        const outcome = await settleWithin(s.db.query('SELECT 2 AS n', select), lifeline ? 60_000 : 4000);
        t.diagnostic(`figure: Sequelize ${setup.version} | blackhole | ${lifeline ? 'pg-lifeline/pg' : 'default (pg)'} | ${outcome === 'hung' ? 'still waiting after 4 s' : outcome === 'ok' ? 'answered' : 'failed with an error'}`);
        if (typeof outcome === 'object') s.tally.app.push(outcome.error);
        if (lifeline) {
          assert.ok(typeof outcome === 'object', 'the statement failed instead of hanging');
          const lost = original(outcome.error);
          assert.ok(lost instanceof OutcomeUnknownError, String(lost));
          assert.equal(lost.diagnosis.cause, 'network');
        }
      });
    });
  });
}

describe('multi-host: a primary and a standby, the standby listed first', () => {
  let set: ReplicaSet;

  before(async () => {
    set = await ReplicaSet.start();
    await set.primary.query('CREATE TABLE notes (body text NOT NULL)');
    await waitFor('the table on the standby', async () => (await set.standby.query(`SELECT to_regclass('notes') AS t`))[0]?.t === 'notes');
  });

  after(async () => {
    await set?.destroy();
  });

  for (const setup of setups) {
    const lifeline = setup.module !== undefined;
    test(`${setup.name}: a write goes to the primary`, async (t) => {
      // Plain pg reads one host, so Sequelize's default is given the first host of the list.
      const hosts = [set.standby, set.primary].map((server) => ({ host: server.host, port: server.port }));
      const client = lifeline ? Client.configure({ hosts, targetSessionAttrs: 'primary' }) : undefined;
      const tally = await withDb(t, setup, { server: set.standby, ...(client ? { client } : {}) }, async ({ db, tally }) => {
        const [rows] = await settle(tally, [db.query('SELECT pg_is_in_recovery() AS standby', select)]);
        await settle(tally, [db.query(`INSERT INTO notes VALUES ('${setup.name}')`)]);
        if (lifeline) assert.deepEqual(rows, [{ standby: false }]);
      });
      if (lifeline) {
        assert.deepEqual(tally.app, []);
        assert.equal((await set.primary.query('SELECT count(*)::int AS n FROM notes WHERE body = $1', [setup.name]))[0]?.n, 1);
      }
    });
  }
});
