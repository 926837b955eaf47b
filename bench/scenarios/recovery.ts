import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { PgCluster } from '../../test/harness/cluster.js';
import { median, now, sleep } from '../lib.js';
import { standardLibs, type Lib } from '../targets.js';

export type Fault = 'fast restart' | 'crash';
const WORKERS = 4;
const WINDOW = 500;
const STEP = 25;
const CAP_AFTER = 8_000; // stop watching this long after the server is back

export interface RecoveryRound {
  outageMs: number; // how long the harness call(s) took
  byLib: Map<string, { firstOkMs: number; fromReadyMs: number; fullMs: number; errors: number }>;
  readyBeforeReturnMs: number;
}

/** SELECT 1 loops (4 workers, 1 ms sleep after each call) with success timestamps. */
function drive(lib: Lib, stop: () => boolean): { oks: number[]; errors: number[]; done: Promise<void> } {
  const oks: number[] = [];
  const errors: number[] = [];
  const worker = async (): Promise<void> => {
    while (!stop()) {
      try {
        await lib.select1();
        oks.push(now());
      } catch {
        errors.push(now());
      }
      await sleep(1);
    }
  };
  return { oks, errors, done: Promise.all(Array.from({ length: WORKERS }, worker)).then(() => undefined) };
}

/** When postmaster.pid (line 8) says "ready" again after the server went down: pg_ctl polls only every 100 ms. */
function watchReady(dataDir: string): { stop(): number } {
  let down = false;
  let readyAt = NaN;
  const timer = setInterval(() => {
    let status = '';
    try {
      status = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[7]?.trim() ?? '';
    } catch {
      status = '';
    }
    if (status !== 'ready') down = true;
    else if (down && Number.isNaN(readyAt)) readyAt = now();
  }, 2);
  return {
    stop: () => {
      clearInterval(timer);
      return readyAt;
    },
  };
}

const countIn = (ts: number[], from: number, to: number): number => ts.reduce((n, t) => n + (t >= from && t < to ? 1 : 0), 0);

/** One fault with all three libraries running at once, so they see the very same outage. */
export async function recoveryRound(cluster: PgCluster, url: string, fault: Fault): Promise<RecoveryRound> {
  const libs = standardLibs(url);
  let stopped = false;
  const runs = libs.map((lib) => ({ lib, ...drive(lib, () => stopped) }));
  await sleep(1_000); // warm
  const preFrom = now();
  await sleep(1_500);
  const preTo = now();
  const tFault = now();
  const watch = watchReady(cluster.dataDir);
  if (fault === 'fast restart') await cluster.restart('fast');
  else {
    await cluster.crash();
    await cluster.startAgain();
  }
  const t0 = now();
  const tReady = watch.stop();
  const pre = new Map(runs.map((r) => [r.lib.name, (countIn(r.oks, preFrom, preTo) / (preTo - preFrom)) * WINDOW]));
  const full = (r: (typeof runs)[number]): number | undefined => {
    for (let start = t0; start + WINDOW <= now(); start += STEP) {
      if (countIn(r.oks, start, start + WINDOW) >= 0.9 * pre.get(r.lib.name)!) return start - t0;
    }
    return undefined;
  };
  while (now() - t0 < CAP_AFTER && runs.some((r) => full(r) === undefined)) await sleep(100);
  stopped = true;
  await Promise.all(runs.map((r) => r.done));
  await Promise.all(libs.map((l) => l.end().catch(() => {})));
  const byLib: RecoveryRound['byLib'] = new Map();
  for (const r of runs) {
    // The outage is the longest success-free gap after the fault began; recovery is its far end.
    let prev = tFault;
    let gap = -1;
    let firstOk = NaN;
    for (const t of r.oks) {
      if (t <= tFault) continue;
      if (t - prev > gap) [gap, firstOk] = [t - prev, t];
      prev = t;
    }
    byLib.set(r.lib.name, { firstOkMs: firstOk - t0, fromReadyMs: firstOk - tReady, fullMs: full(r) ?? NaN, errors: r.errors.filter((t) => t >= tFault).length });
  }
  return { outageMs: t0 - tFault, byLib, readyBeforeReturnMs: t0 - tReady };
}

export interface RecoverySummary {
  outageMs: number;
  readyBeforeReturnMs: number;
  byLib: Map<string, { firstOkMs: number; fromReadyMs: number; worstFromReadyMs: number; fullMs: number; errors: number; worstFirstOkMs: number }>;
}

export async function recovery(cluster: PgCluster, url: string, fault: Fault, rounds: number): Promise<RecoverySummary> {
  const all: RecoveryRound[] = [];
  for (let i = 0; i < rounds; i++) all.push(await recoveryRound(cluster, url, fault));
  const byLib: RecoverySummary['byLib'] = new Map();
  for (const name of all[0]!.byLib.keys()) {
    const rs = all.map((r) => r.byLib.get(name)!);
    byLib.set(name, {
      firstOkMs: median(rs.map((r) => r.firstOkMs)),
      fromReadyMs: median(rs.map((r) => r.fromReadyMs)),
      worstFromReadyMs: Math.max(...rs.map((r) => r.fromReadyMs)),
      fullMs: median(rs.map((r) => r.fullMs)),
      errors: median(rs.map((r) => r.errors)),
      worstFirstOkMs: Math.max(...rs.map((r) => r.firstOkMs)),
    });
  }
  return { outageMs: median(all.map((r) => r.outageMs)), readyBeforeReturnMs: median(all.map((r) => r.readyBeforeReturnMs)), byLib };
}
