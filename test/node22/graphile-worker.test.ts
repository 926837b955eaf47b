// graphile-worker (0.18, Node.js 22.18+) over pg-lifeline's Pool (`pgPool`), against a real server
// (password and TLS). Each case runs on pg-lifeline, whose outcome is asserted, and for comparison
// on a plain pg.Pool, whose errors are only counted and printed (`figure:` lines) for
// docs/integrations.md. Every run of a handler is recorded in `runs`, which has no unique key: a job
// that ran twice would leave two rows.
import assert from 'node:assert/strict';
import { after, before, describe, test, type TestContext } from 'node:test';
import { Logger, run, type Runner, type Task } from 'graphile-worker';
import * as pg from 'pg';
import { Pool } from '../../src/index.js';
import { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';
import { newTally, report, settle, watchProcess, type Tally } from '../integrations/fault-tally.js';
import { settled } from '../integrations/orm-shared.js';

const setups = [
  { name: 'pg-lifeline', lifeline: true },
  { name: 'pg.Pool', lifeline: false },
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
  readonly runner: Runner;
  readonly app: string;
  readonly tally: Tally;
  /** Resolves the held jobs' handlers: until then, the first CONCURRENCY jobs of a held batch stay in flight. */
  readonly release: () => void;
  /** Handlers currently waiting to be released. */
  readonly held: () => number;
  readonly pool: pg.Pool;
}

/** Runs `fn` with a graphile-worker runner on `setup`'s pool, then stops it and ends the pool (the runner leaves it to its owner). */
async function withWorker(t: TestContext, setup: Setup, fn: (s: Session) => Promise<void>): Promise<Tally> {
  const app = `gw-${process.pid}-${++seq}`;
  const tally = newTally();
  const config = { ...cluster.clientConfig(), application_name: app, max: 4 };
  const pool: pg.Pool = setup.lifeline ? new Pool(config) : new pg.Pool(config);
  pool.on('error', (error: unknown) => void tally.pool.push(error));
  // graphile-worker warns without a 'connect' listener; this one has nothing to add (the pool's 'error' counts idle deaths).
  pool.on('connect', (client: pg.PoolClient) => client.on('error', () => undefined));
  let open: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (open = resolve));
  let waiting = 0;
  const record: Task = async (payload, helpers) => {
    const { id, hold } = payload as { id: string; hold: boolean };
    if (hold) {
      waiting++;
      await gate;
      waiting--;
    }
    await helpers.query('INSERT INTO runs (job) VALUES ($1)', [id]);
  };
  const logger = new Logger(() => (level, message, meta) => {
    if (level === 'error' || level === 'warning') tally.app.push((meta as { error?: unknown } | undefined)?.error ?? new Error(message));
  });
  const unwatch = watchProcess(tally);
  const runner = await run({ pgPool: pool, taskList: { record }, concurrency: CONCURRENCY, noHandleSignals: true, pollInterval: 100, logger });
  try {
    await fn({ runner, app, tally, pool, release: open, held: () => waiting });
  } finally {
    open();
    await runner.stop();
    unwatch();
    if (pool instanceof Pool) {
      assert.equal(pool.ending, false, 'runner.stop() leaves a pool it was given running');
      await settled(pool);
    }
    await pool.end();
    report(t, 'graphile-worker', setup.name, tally);
  }
  if (setup.lifeline) assert.deepEqual(tally.escaped, [], 'nothing may reach the process as an unhandled error');
  return tally;
}

/** Adds `BATCH` jobs; with `hold`, the first ones taken stay in their handler until `release()`. */
async function addBatch({ runner, tally }: Session, prefix: string, hold = false): Promise<string[]> {
  const ids = Array.from({ length: BATCH }, (_, i) => `${prefix}-${i}`);
  await settle(tally, ids.map((id) => runner.addJob('record', { id, hold }, { jobKey: id })));
  return ids;
}

/** Waits until no job is queued or running any more, then returns how many times each of `ids` ran. */
async function runsOf(ids: readonly string[]): Promise<Map<string, number>> {
  await waitFor(
    'every job to finish',
    async () => {
      const [row] = await cluster.query<{ n: number }>('SELECT count(*)::int AS n FROM graphile_worker.jobs');
      return row?.n === 0;
    },
    { timeoutMs: 30_000, intervalMs: 50 },
  );
  const rows = await cluster.query<{ job: string; n: number }>('SELECT job, count(*)::int AS n FROM runs WHERE job = ANY($1) GROUP BY job', [ids]);
  return new Map(ids.map((id) => [id, rows.find((r) => r.job === id)?.n ?? 0]));
}

/** Prints the jobs that did not run exactly once (on either pool), and asserts there are none on pg-lifeline. */
function checkOnce(t: TestContext, setup: Setup, counts: Map<string, number>): void {
  const wrong = [...counts].filter(([, n]) => n !== 1);
  t.diagnostic(`figure: graphile-worker | ${setup.name} | ${counts.size} jobs, ${wrong.length} not run exactly once ${JSON.stringify(wrong)}`);
  if (setup.lifeline) assert.deepEqual(wrong, [], 'each job ran exactly once (job, runs)');
}

/** Whether a backend of `app` has LISTEN as its last statement: graphile-worker's dedicated client (taken with callback-style connect). */
async function listening(app: string): Promise<boolean> {
  const rows = await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN %'`, [app]);
  return rows.length === 1;
}

/**
 * After a fault: graphile-worker listens again, and every connection the pool holds is a live
 * backend. graphile-worker gives the dead LISTEN client back with a plain release(), no error: a
 * pool that kept it would count more connections than there are backends.
 */
async function recovered(t: TestContext, setup: Setup, { app, pool }: Session): Promise<void> {
  const listens = await waitFor('graphile-worker to LISTEN again', () => listening(app), { timeoutMs: 15_000 }).catch(() => false);
  let live = 0;
  const matches = await waitFor('as many pool connections as live backends', async () => (live = (await cluster.backendPids(app)).length) === pool.totalCount, { timeoutMs: 5_000 }).catch(() => false);
  t.diagnostic(`figure: graphile-worker | ${setup.name} | LISTEN again ${listens} | pool connections ${pool.totalCount}, live backends ${live}`);
  if (setup.lifeline) {
    assert.equal(listens, true, 'graphile-worker listens again');
    assert.equal(matches, true, 'no dead connection is kept');
  }
}

/** Enqueues a held batch, waits until jobs are in flight, applies `fault`, enqueues another batch, then counts runs. */
async function acrossFault(s: Session, name: string, fault: () => Promise<void>): Promise<Map<string, number>> {
  const before = await addBatch(s, `${name}-before`, true);
  await waitFor('jobs in flight', () => s.held() === CONCURRENCY);
  await fault();
  s.release();
  const afterFault = await addBatch(s, `${name}-after`);
  return runsOf([...before, ...afterFault]);
}

/** `acrossFault`, checking first that graphile-worker listens, and afterwards that it recovered. */
async function faultCase(t: TestContext, setup: Setup, s: Session, name: string, fault: () => Promise<void>): Promise<void> {
  await waitFor('graphile-worker to LISTEN', () => listening(s.app));
  checkOnce(t, setup, await acrossFault(s, name, fault));
  await recovered(t, setup, s);
}

test('runs on Node.js 22.18 or later, as graphile-worker 0.18 requires', () => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  assert.ok(major > 22 || (major === 22 && minor >= 18), process.versions.node);
});

for (const setup of setups) {
  describe(`graphile-worker on ${setup.name}`, () => {
    test('ordinary use: every job added is processed exactly once', async (t) => {
      const tally = await withWorker(t, setup, async (s) => {
        const counts = await runsOf(await addBatch(s, `plain-${s.app}`));
        checkOnce(t, setup, counts);
      });
      if (setup.lifeline) assert.deepEqual(tally.app, []);
    });

    test('every idle backend killed, the LISTEN one included: jobs before and after run once', async (t) => {
      await withWorker(t, setup, async (s) => {
        await faultCase(t, setup, s, `kill-${s.app}`, async () => {
          const pids = await cluster.backendPids(s.app);
          assert.ok((await cluster.terminateBackends(s.app)) >= 1);
          await waitFor('the backends to exit', async () => !(await cluster.backendPids(s.app)).some((pid) => pids.includes(pid)));
        });
      });
    });

    test('fast restart: jobs before and after run once', async (t) => {
      await withWorker(t, setup, async (s) => {
        await faultCase(t, setup, s, `restart-${s.app}`, () => cluster.restart('fast'));
      });
    });
  });
}

describe('graphile-worker and the listeners it asks for', () => {
  test("a pool without 'error' and 'connect' listeners: graphile-worker warns and adds its own", async () => {
    const pool = new Pool({ ...cluster.clientConfig(), max: 2 });
    const warnings: string[] = [];
    const warn = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args.map(String).join(' '));
    let runner: Runner | undefined;
    let listeners = 0;
    try {
      runner = await run({ pgPool: pool, taskList: { idle: () => undefined }, concurrency: 1, noHandleSignals: true, pollInterval: 100, logger: new Logger(() => () => undefined) });
      listeners = Math.min(pool.listenerCount('error'), pool.listenerCount('connect'));
    } finally {
      console.warn = warn;
      await runner?.stop();
      await pool.end();
    }
    assert.ok(warnings.some((w) => w.includes("doesn't have error handlers")), warnings.join('\n'));
    assert.ok(listeners >= 1, 'it added an error and a connect listener');
  });
});
