// Turns the workers' reports into the final numbers, and prints the totals as the terminal table.
import type { Supervisor } from './children.js';
import { alignRows, firstSuccessMs } from './breakdown.js';
import { LABEL, type ErrorKind, type FaultWindow, type LibSummary } from './model.js';
import { countMissing, type Target } from './server.js';

function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return Math.round(sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2);
}

function addInto(total: number[], series: Array<number | null>): void {
  series.forEach((n, i) => (total[i] = (total[i] ?? 0) + (n ?? 0)));
}

/** Merges every incarnation of one library's worker and reconciles its acked writes with the database. */
export async function summarize(target: Target, worker: Supervisor, seconds: number, windows: FaultWindow[]): Promise<LibSummary> {
  const okSeries = new Array<number>(seconds).fill(0);
  const errorSeries = new Array<number>(seconds).fill(0);
  const errorKinds: Record<string, ErrorKind> = {};
  for (const report of worker.reports) {
    addInto(okSeries, report.ok);
    addInto(errorSeries, report.errors);
    for (const [key, kind] of Object.entries(report.errorKinds)) {
      const seen = errorKinds[key];
      if (seen) seen.count += kind.count;
      else errorKinds[key] = { ...kind };
    }
  }
  const ok = okSeries.reduce((a, b) => a + b, 0);
  // Incarnations follow one another, so their ticks concatenate in order.
  const okTicks = worker.reports.flatMap((r) => r.okTicks);
  const recoveries = windows.map((w) => firstSuccessMs(w, okTicks)).filter((ms): ms is number => ms !== null);
  const hungAt = worker.reports.flatMap((r) => r.hungAt);
  return {
    lib: worker.lib,
    ok,
    errors: errorSeries.reduce((a, b) => a + b, 0),
    lostWrites: await countMissing(target, worker.reports.flatMap((r) => r.acked)),
    crashes: worker.crashes,
    hung: hungAt.length,
    recoveryMs: median(recoveries),
    opsPerSecond: Math.round(ok / seconds),
    okSeries: okSeries.slice(0, seconds),
    errorSeries: errorSeries.slice(0, seconds),
    okTicks,
    hungAt,
    crashAt: [...worker.crashAt],
    errorKinds,
    errorsAt: worker.reports.flatMap((r) => r.errorsAt),
    heard: worker.reports.flatMap((r) => r.heard),
    told: worker.reports.flatMap((r) => r.told),
    listenErrors: worker.reports.flatMap((r) => (r.listenError === undefined ? [] : [r.listenError])),
  };
}

/** The totals table's columns: a header and how to read the cell from a library's summary. */
export const COLUMNS: Array<[string, (s: LibSummary) => string]> = [
  ['errors seen', (s) => String(s.errors)],
  ['lost writes', (s) => String(s.lostWrites)],
  ['crashes', (s) => String(s.crashes)],
  ['hung ops', (s) => String(s.hung)],
  ['recovery ms', (s) => (s.recoveryMs === null ? '-' : String(s.recoveryMs))],
  ['ops/s', (s) => String(s.opsPerSecond)],
];

/** The totals, one row per library. */
export function textTable(libs: LibSummary[]): string {
  return alignRows([['', ...COLUMNS.map(([name]) => name)], ...libs.map((s) => [LABEL[s.lib], ...COLUMNS.map(([, get]) => get(s))])]);
}
