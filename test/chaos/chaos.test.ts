/**
 * Chaos suite: pg-lifeline and pg.Pool run the same workload side by side, each in its own child
 * process, through a fault proxy, while a fault script plays. Afterwards each library's claims are
 * reconciled with the database. Only pg-lifeline is held to the invariants; pg.Pool is the control.
 *
 *   node --import tsx --test test/chaos/chaos.test.ts
 *   CHAOS_SECONDS=8 (per scenario)  CHAOS_REPORT=path.md (also write the table as Markdown)
 *   CHAOS_RAW_DIR=dir (keep every worker's raw JSON report)
 */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, test, type TestContext } from 'node:test';
import { PgCluster } from '../harness/cluster.js';
import { FaultProxy } from '../harness/proxy.js';
import { balanceSum, EXPECTED_SUM, reconcile, resetSchema } from './reconcile.js';
import type { Lib, LibResult, ScenarioResult } from './report.js';
import { SCENARIOS, type FaultContext, type Scenario } from './scenarios.js';
import { spawnWorker, type RunningWorker, type WorkerExit } from './spawn.js';
import { markdownTable, plainTable } from './table.js';

const DURATION_MS = Math.round(Number(process.env['CHAOS_SECONDS'] ?? 8) * 1000);
const OP_DEADLINE_MS = 15_000;
// Run + ops in flight at the end (bounded by their watchdog) + bounded pool.end() + startup slack.
const hardTimeoutMs = (durationMs: number): number => durationMs + OP_DEADLINE_MS + 5_000 + 20_000;
const LIBS: Lib[] = ['pg-lifeline', 'pg'];
const ID_PREFIX: Record<Lib, string> = { 'pg-lifeline': 'a11fe11e', pg: 'bbbbbbbb' };
// The harness turns synchronous_commit off for speed; then an acked commit can vanish in a crash,
// which would be blamed on the pools. fsync may stay off: only the server dies, not the OS.
const SETTINGS = { max_connections: 100, synchronous_commit: true };

interface Target {
  cluster: PgCluster;
  proxy: FaultProxy;
}

let plain: Target | undefined;
let tls: Target | undefined;
const results: ScenarioResult[] = [];
const suiteStart = Date.now();

// Both ask for a SCRAM password; the TLS one is verified against the harness's test CA.
async function startTls(): Promise<Target> {
  const cluster = await PgCluster.start({ settings: SETTINGS });
  return { cluster, proxy: await FaultProxy.start(cluster) };
}

async function startPlain(): Promise<Target> {
  const cluster = await PgCluster.start({ settings: SETTINGS, tls: false });
  return { cluster, proxy: await FaultProxy.start(cluster) };
}

/** Back to a healthy server and proxy, whatever the fault script left behind. */
async function heal(target: Target): Promise<void> {
  if (!target.cluster.isRunning()) await target.cluster.startAgain();
  target.proxy.passThrough();
  await target.proxy.accept();
}

/** Ends every client session, so nothing lands after reconciling and no lock outlives its run. */
async function quiesce(target: Target): Promise<void> {
  target.proxy.resetAll();
  await target.cluster.terminateBackends();
}

async function runScenario(scenario: Scenario): Promise<ScenarioResult> {
  const target = scenario.tls ? (tls ??= await startTls()) : (plain ??= await startPlain());
  const { cluster, proxy } = target;
  await heal(target);
  await quiesce(target);
  await resetSchema(cluster);

  const durationMs = DURATION_MS + (scenario.tailMs ?? 0);
  const conn = { ...cluster.clientConfig(), host: proxy.host, port: proxy.port };
  let workers: RunningWorker[] = [];
  let startedAt = 0;
  const ctx: FaultContext = {
    cluster,
    proxy,
    durationMs,
    at: (ms) => delay(Math.max(0, startedAt + ms - Date.now())),
    faultEnd: () => workers.forEach((w) => w.faultEnd()),
  };
  await scenario.setup?.(ctx);
  let faultError: unknown;
  let exits: WorkerExit[] = [];
  try {
    workers = LIBS.map((lib) =>
      spawnWorker(
        lib,
        {
          CONN: JSON.stringify(conn),
          DURATION_MS: String(durationMs),
          WORKERS: '16',
          OP_DEADLINE_MS: String(OP_DEADLINE_MS),
          ID_PREFIX: ID_PREFIX[lib],
          ...scenario.env,
        },
        hardTimeoutMs(durationMs),
      ),
    );
    try {
      await Promise.all(workers.map((w) => w.ready));
    } catch (error) {
      workers.forEach((w) => w.kill());
      throw error;
    }
    startedAt = Date.now();
    workers.forEach((w) => w.start());
    // Record a failed fault script, but still collect the workers' reports before failing.
    await scenario.fault(ctx).catch((error: unknown) => (faultError = error));
  } finally {
    exits = await Promise.all(workers.map((w) => w.exited));
    await heal(target);
    await scenario.teardown?.(ctx);
  }
  await quiesce(target);
  const libs = {} as Record<Lib, LibResult>;
  for (const [i, lib] of LIBS.entries()) libs[lib] = await reconcile(cluster, ID_PREFIX[lib], exits[i] as WorkerExit);
  const rawDir = process.env['CHAOS_RAW_DIR'];
  if (rawDir) for (const lib of LIBS) await writeFile(path.join(rawDir, `${scenario.name}-${lib}.json`), JSON.stringify(libs[lib].report));
  const result: ScenarioResult = { name: scenario.name, seconds: durationMs / 1000, balanceSum: await balanceSum(cluster), libs };
  results.push(result);
  if (faultError !== undefined) throw new Error(`fault script of ${scenario.name} failed`, { cause: faultError });
  return result;
}

/** One line per fact, so TAP output (which escapes newlines in a diagnostic) stays readable. */
function describeLib(result: LibResult): string[] {
  const r = result.report;
  return [
    `${r.lib}: ${result.exit}, ok ${r.ok}, failed ${r.failed}, unknown ${r.unknownOutcome} (${result.unknownLanded} landed), ` +
      `hung ${r.hung}, unhandled ${r.unhandled}, retries ${r.retries ?? '-'} (events ${r.retryEvents}), pool errors ${r.poolErrors}, ` +
      `recovery ${JSON.stringify(r.firstOkAfter)} missed ${r.recoveryMissed}`,
    ...r.errorSamples.map((s) => `  ${s.count} x [${s.code}] ${s.message}`),
    `  per 0.5 s ok:     ${r.timeline.map(([, ok]) => ok).join(' ')}`,
    `  per 0.5 s failed: ${r.timeline.map(([, , failed]) => failed).join(' ')}`,
    ...(result.crashed && result.stderrSummary ? [`  crash: ${result.stderrSummary}`] : []),
  ];
}

function checkInvariants(t: TestContext, result: ScenarioResult): void {
  const l = result.libs['pg-lifeline'];
  const p = result.libs.pg;
  for (const lib of [l, p]) describeLib(lib).forEach((line) => t.diagnostic(line));
  // Control: pg.Pool only has to have run (it may crash; that is recorded, not judged).
  assert.ok(p.report.ok + p.report.failed > 0 || p.crashed, 'the pg.Pool control worker did no work');
  const got = {
    reported: l.reported,
    ackedMissing: l.ackedMissing.length,
    presentButFailed: l.presentButFailed.length,
    appliedTwice: l.appliedTwice.length,
    unhandled: l.report.unhandled,
    hung: l.report.hung,
    retrySafeFailures: l.report.retrySafeFailures,
    crashed: l.crashed,
    balanceSum: result.balanceSum,
  };
  const want = { reported: true, ackedMissing: 0, presentButFailed: 0, appliedTwice: 0, unhandled: 0, hung: 0, retrySafeFailures: 0, crashed: false, balanceSum: EXPECTED_SUM };
  const evidence = [...l.ackedMissing, ...l.presentButFailed, ...l.appliedTwice].slice(0, 5).join(', ');
  assert.deepEqual(got, want, `pg-lifeline broke an invariant in ${result.name}\n  ${describeLib(l).join('\n  ')}${evidence ? `\n  e.g. ${evidence}` : ''}`);
}

describe('chaos', { concurrency: false }, () => {
  before(async () => {
    plain = await startPlain();
  });

  after(async () => {
    if (results.length > 0) {
      console.log(`\n${plainTable(results)}\n(total ${Math.round((Date.now() - suiteStart) / 1000)} s)\n`);
      const file = process.env['CHAOS_REPORT'];
      if (file) await writeFile(file, markdownTable(results));
    }
    for (const target of [plain, tls]) {
      await target?.proxy.close();
      await target?.cluster.destroy();
    }
  });

  for (const scenario of SCENARIOS) {
    test(scenario.name, { timeout: hardTimeoutMs(DURATION_MS + (scenario.tailMs ?? 0)) + 60_000 }, async (t) => {
      checkInvariants(t, await runScenario(scenario));
    });
  }
});
