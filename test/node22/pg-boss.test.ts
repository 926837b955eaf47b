// pg-boss (12, Node.js 22.12+) over pg-lifeline's Pool through `pgBossDb(pool)`, against a real
// server (password and TLS). Each case runs on pg-lifeline, whose outcome is asserted, and for
// comparison on pg-boss's own pool (pg.Pool), whose errors are only counted and printed (`figure:`
// lines) for docs/integrations.md. Every run of a handler is recorded in `runs`, which has no
// unique key: a job that ran twice would leave two rows.
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { PgBoss } from 'pg-boss';
import * as pg from 'pg';
import { Pool, TransactionRolledBackError, isOutcomeUnknown, pgBossDb } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { newTally, report, settle, watchProcess, type Tally } from '../integrations/fault-tally.js';
import { running, settled } from '../integrations/orm-shared.js';

const setups = [
  { name: 'pg-lifeline (pgBossDb)', lifeline: true },
  { name: 'pg-boss default (pg.Pool)', lifeline: false },
] as const;
type Setup = (typeof setups)[number];

const BATCH = 6;
const CONCURRENCY = 2;

let cluster: PgCluster;
let seq = 0;

before(async () => {
  cluster = await PgCluster.start();
  await cluster.query('CREATE TABLE runs (job text NOT NULL)');
});

after(async () => {
  await cluster?.destroy();
});

interface Session {
  readonly boss: PgBoss;
  readonly app: string;
  readonly queue: string;
  readonly tally: Tally;
  /** Resolves the held jobs' handlers: until then, the first CONCURRENCY jobs of a held batch stay in flight. */
  readonly release: () => void;
  /** Handlers currently waiting to be released. */
  readonly held: () => number;
}

/** Runs `fn` with a started pg-boss and a worker on `setup`, then stops pg-boss and ends the pools. */
async function withBoss(t: TestContext, setup: Setup, fn: (s: Session) => Promise<void>): Promise<Tally> {
  const app = `boss-${process.pid}-${++seq}`;
  const queue = `q-${seq}`;
  const tally = newTally();
  const config = { ...cluster.clientConfig(), application_name: app, max: 4 };
  const pool = setup.lifeline ? new Pool(config) : undefined;
  pool?.on('error', (error: unknown) => void tally.pool.push(error));
  // The handlers' own writes; on the default setup a pg.Pool beside pg-boss's.
  const appPool: pg.Pool = pool ?? new pg.Pool(config);
  if (!pool) appPool.on('error', (error: unknown) => void tally.pool.push(error));
  const intervals = { superviseIntervalSeconds: 1, maintenanceIntervalSeconds: 1, monitorIntervalSeconds: 1 };
  const boss = pool ? new PgBoss({ db: pgBossDb(pool), ...intervals }) : new PgBoss({ ...config, ...intervals });
  boss.on('error', (error: unknown) => void tally.app.push(error));
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let waiting = 0;
  const unwatch = watchProcess(tally);
  try {
    await boss.start();
    await boss.createQueue(queue);
    await boss.work<{ id: string; hold: boolean }>(queue, { pollingIntervalSeconds: 0.5, batchSize: 1, localConcurrency: CONCURRENCY }, async ([job]) => {
      if (job === undefined) return;
      if (job.data.hold) {
        waiting++;
        await gate;
        waiting--;
      }
      await appPool.query('INSERT INTO runs (job) VALUES ($1)', [job.data.id]);
    });
    await fn({ boss, app, queue, tally, release: open, held: () => waiting });
  } finally {
    open();
    await boss.stop({ graceful: false });
    unwatch();
    if (pool) {
      assert.equal(pool.ending, false, 'boss.stop() leaves a pool it was given running');
      await settled(pool);
    }
    await appPool.end();
    report(t, 'pg-boss', setup.name, tally);
  }
  if (setup.lifeline) assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  return tally;
}

/** Sends `BATCH` jobs; with `hold`, the first ones taken stay in their handler until `release()`. */
async function sendBatch({ boss, queue, tally }: Session, prefix: string, hold = false): Promise<string[]> {
  const ids = Array.from({ length: BATCH }, (_, i) => `${prefix}-${i}`);
  await settle(tally, ids.map((id) => boss.send(queue, { id, hold })));
  return ids;
}

/** Waits until every job of `queue` is completed (none queued, active or to be retried), then returns how many times each of `ids` ran. */
async function runsOf(queue: string, ids: readonly string[]): Promise<Map<string, number>> {
  await waitFor(
    'every job to complete',
    async () => {
      const [row] = await cluster.query<{ n: number; done: number }>(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE state = 'completed')::int AS done FROM pgboss.job WHERE name = $1`,
        [queue],
      );
      return row !== undefined && row.n > 0 && row.n === row.done;
    },
    { timeoutMs: 30_000, intervalMs: 50 },
  );
  const rows = await cluster.query<{ job: string; n: number }>('SELECT job, count(*)::int AS n FROM runs WHERE job = ANY($1) GROUP BY job', [ids]);
  return new Map(ids.map((id) => [id, rows.find((r) => r.job === id)?.n ?? 0]));
}

/** Prints the jobs that did not run exactly once (on either pool), and asserts there are none on pg-lifeline. */
function checkOnce(t: TestContext, setup: Setup, counts: Map<string, number>): void {
  const wrong = [...counts].filter(([, n]) => n !== 1);
  t.diagnostic(`figure: pg-boss | ${setup.name} | ${counts.size} jobs, ${wrong.length} not run exactly once ${JSON.stringify(wrong)}`);
  if (setup.lifeline) assert.deepEqual(wrong, [], 'each job ran exactly once (job, runs)');
}

/** Sends a held batch, waits until jobs are in flight, applies `fault`, sends another batch, then counts runs. */
async function acrossFault(s: Session, name: string, fault: () => Promise<void>): Promise<Map<string, number>> {
  const before = await sendBatch(s, `${name}-before`, true);
  await waitFor('jobs in flight', () => s.held() === CONCURRENCY);
  await fault();
  s.release();
  const afterFault = await sendBatch(s, `${name}-after`);
  return runsOf(s.queue, [...before, ...afterFault]);
}

test('runs on Node.js 22.12 or later, as pg-boss 12 requires', () => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  assert.ok(major > 22 || (major === 22 && minor >= 12), process.versions.node);
});

for (const setup of setups) {
  describe(`pg-boss on ${setup.name}`, () => {
    test('ordinary use: every job sent is processed exactly once', async (t) => {
      const tally = await withBoss(t, setup, async (s) => {
        checkOnce(t, setup, await runsOf(s.queue, await sendBatch(s, `plain-${s.app}`)));
      });
      if (setup.lifeline) assert.deepEqual(tally.app, []);
    });

    test('every idle backend killed: jobs before and after run once', async (t) => {
      await withBoss(t, setup, async (s) => {
        const counts = await acrossFault(s, `kill-${s.app}`, async () => {
          const pids = await cluster.backendPids(s.app);
          assert.ok((await cluster.terminateBackends(s.app)) >= 1);
          await waitFor('the backends to exit', async () => !(await cluster.backendPids(s.app)).some((pid) => pids.includes(pid)));
        });
        checkOnce(t, setup, counts);
      });
    });

    test('fast restart: jobs before and after run once', async (t) => {
      await withBoss(t, setup, async (s) => {
        checkOnce(t, setup, await acrossFault(s, `restart-${s.app}`, () => cluster.restart('fast')));
      });
    });
  });
}

describe('pg-boss useListenNotify on pgBossDb', () => {
  test('a job is woken by its notification, and again after every backend was killed; each runs once', async (t) => {
    const app = `boss-notify-${process.pid}`;
    const queue = `notify-${process.pid}`;
    const pool = new Pool({ ...cluster.clientConfig(), application_name: app, max: 4 });
    const tally = newTally();
    pool.on('error', (error: unknown) => void tally.pool.push(error));
    const base = pgBossDb(pool);
    let notifications = 0;
    let reconnects = 0;
    // Counts what pg-boss hears through the adapter, and passes it on unchanged.
    const db = {
      ...base,
      listen: (channel: string, onNotification: (payload: string) => void, onReconnect: () => void) =>
        base.listen(channel, (payload) => void (notifications++, onNotification(payload)), () => void (reconnects++, onReconnect())),
    };
    const boss = new PgBoss({ db, useListenNotify: true, superviseIntervalSeconds: 1, maintenanceIntervalSeconds: 1, monitorIntervalSeconds: 1 });
    boss.on('error', (error: unknown) => void tally.app.push(error));
    const warnings: unknown[] = [];
    boss.on('warning', (warning: unknown) => void warnings.push(warning));
    const unwatch = watchProcess(tally);
    try {
      await boss.start();
      await boss.createQueue(queue, { notify: true });
      // Polling every 5 minutes: within this test, only a notification (or the fetch forced by a reconnect) wakes the worker.
      await boss.work<{ id: string }>(queue, { pollingIntervalSeconds: 300, notifyPollingIntervalSeconds: 300, batchSize: 1 }, async ([job]) => {
        if (job !== undefined) await pool.query('INSERT INTO runs (job) VALUES ($1)', [job.data.id]);
      });
      await waitFor('the first LISTEN', () => reconnects === 1);
      const ran = async (id: string): Promise<void> =>
        void (await waitFor(`job ${id} to run`, async () => (await cluster.query('SELECT 1 FROM runs WHERE job = $1', [id])).length > 0, { timeoutMs: 30_000 }));
      const ids = [`${queue}-a`, `${queue}-b`, `${queue}-c`];
      await boss.send(queue, { id: ids[0] });
      await ran(ids[0]!);
      // The worker has fetched and is waiting out its poll now: only the notification can wake it.
      const heard = notifications;
      await boss.send(queue, { id: ids[1] });
      await ran(ids[1]!);
      assert.ok(notifications > heard, 'the job was announced through the listener');
      assert.ok((await cluster.terminateBackends(app)) >= 2, 'the pool connections and the LISTEN session');
      await waitFor('the listener to come back', () => reconnects === 2, { timeoutMs: 30_000 });
      const heardBefore = notifications;
      await boss.send(queue, { id: ids[2] });
      await ran(ids[2]!);
      assert.ok(notifications > heardBefore, 'after the kill, the job was again announced through the listener');
      checkOnce(t, setups[0], await runsOf(queue, ids));
      assert.deepEqual(warnings, [], 'pg-boss never fell back to polling only');
    } finally {
      await boss.stop({ graceful: false });
      unwatch();
      await settled(pool);
      assert.equal(pool.stats().listen?.listeners ?? 0, 0, 'boss.stop() closed the listener');
      await pool.end();
    }
    assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  });
});

describe('pg-boss transactional workers on pgBossDb', () => {
  test("a handler's writes commit with the job's completion, and roll back with its failure", async () => {
    const app = `boss-tx-${process.pid}`;
    const queue = `tx-${process.pid}`;
    const pool = new Pool({ ...cluster.clientConfig(), application_name: app, max: 4 });
    const tally = newTally();
    pool.on('error', (error: unknown) => void tally.pool.push(error));
    const boss = new PgBoss({ db: pgBossDb(pool), superviseIntervalSeconds: 1, maintenanceIntervalSeconds: 1, monitorIntervalSeconds: 1 });
    boss.on('error', (error: unknown) => void tally.app.push(error));
    const unwatch = watchProcess(tally);
    const ok = `${queue}-ok`;
    const bad = `${queue}-bad`;
    try {
      await boss.start();
      await boss.createQueue(queue, { retryLimit: 0 });
      const options = { transactional: true, pollingIntervalSeconds: 0.5, batchSize: 1 } as const;
      await boss.work<{ id: string }, unknown, typeof options>(queue, options, async ([job], tx) => {
        if (job === undefined) return;
        await tx.executeSql('INSERT INTO runs (job) VALUES ($1)', [job.data.id]);
        if (job.data.id === bad) throw new Error('the handler failed after its insert');
      });
      const okId = await boss.send(queue, { id: ok });
      const badId = await boss.send(queue, { id: bad });
      const stateOf = async (id: string | null): Promise<string | undefined> =>
        (await cluster.query<{ state: string }>('SELECT state::text FROM pgboss.job WHERE id = $1', [id]))[0]?.state;
      await waitFor('both jobs to settle', async () => (await stateOf(okId)) === 'completed' && (await stateOf(badId)) === 'failed', { timeoutMs: 30_000 });
      const rows = await cluster.query<{ job: string }>('SELECT job FROM runs WHERE job = ANY($1) ORDER BY job', [[ok, bad]]);
      assert.deepEqual(rows.map((r) => r.job), [ok], 'the failed handler left nothing behind; the completed one wrote once');
    } finally {
      await boss.stop({ graceful: false });
      unwatch();
      await settled(pool);
      await pool.end();
    }
    assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  });

  test('commit() reports a transaction the server rolled back; rollback() never rejects; both refuse a second settle', async () => {
    const pool = new Pool({ ...cluster.clientConfig(), max: 2 });
    try {
      const db = pgBossDb(pool);
      const swallowed = await db.beginTransaction();
      await swallowed.db.executeSql('SELECT 1/0').catch(() => undefined);
      await assert.rejects(swallowed.commit(), TransactionRolledBackError);
      await assert.rejects(swallowed.db.executeSql('SELECT 1'), /already settled/);
      const rolled = await db.beginTransaction();
      await rolled.db.executeSql("INSERT INTO runs (job) VALUES ('rolled-back')");
      await rolled.rollback();
      await rolled.rollback();
      await assert.rejects(rolled.commit(), /already settled/);
      assert.deepEqual(await cluster.query("SELECT job FROM runs WHERE job = 'rolled-back'"), []);
      await settled(pool);
    } finally {
      await pool.end();
    }
  });
});

describe('pgBossDb', () => {
  test('multi-statement text gives the rows of every statement; poolCounts reads the pool', async () => {
    const pool = new Pool({ ...cluster.clientConfig(), max: 3 });
    try {
      const db = pgBossDb(pool);
      assert.deepEqual((await db.executeSql('SELECT 1 AS n; SELECT 2 AS n')).rows, [{ n: 1 }, { n: 2 }]);
      assert.deepEqual((await db.executeSql('SELECT $1::int AS n', [3])).rows, [{ n: 3 }]);
      assert.deepEqual(db.poolCounts(), { max: 3, total: 1, idle: 1, waiting: 0 });
    } finally {
      await pool.end();
    }
    assert.equal(pgBossDb(pool).poolCounts(), null);
  });

  test('a statement killed while it runs is not retried: it rejects as outcome unknown', async () => {
    const app = `boss-unknown-${process.pid}`;
    const pool = new Pool({ ...cluster.clientConfig(), application_name: app, max: 1 });
    pool.on('error', () => undefined);
    try {
      const db = pgBossDb(pool);
      const insert = db.executeSql(`INSERT INTO runs (job) SELECT $1 FROM pg_sleep(2)`, ['unknown']);
      const failed = insert.then(() => undefined, (error: unknown) => error);
      const [pid] = await waitFor('the insert to start', () => cluster.backendPids(app).then((pids) => (pids.length === 1 ? pids : undefined)));
      assert.ok(pid !== undefined);
      await running(cluster, pid);
      await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
      const error = await failed;
      assert.ok(isOutcomeUnknown(error), String(error));
      assert.deepEqual(await cluster.query(`SELECT job FROM runs WHERE job = 'unknown'`), [], 'it ran once, and the kill rolled it back');
    } finally {
      await pool.end();
    }
  });
});
