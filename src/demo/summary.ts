// Turns the workers' reports into the final numbers, and prints them as the terminal table.
import type { Supervisor } from './children.js';
import { LABEL, type LibSummary } from './model.js';
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
export async function summarize(target: Target, worker: Supervisor, seconds: number): Promise<LibSummary> {
  const okSeries = new Array<number>(seconds).fill(0);
  const errorSeries = new Array<number>(seconds).fill(0);
  const errorKinds: Record<string, number> = {};
  for (const report of worker.reports) {
    addInto(okSeries, report.ok);
    addInto(errorSeries, report.errors);
    for (const [kind, n] of Object.entries(report.errorKinds)) errorKinds[kind] = (errorKinds[kind] ?? 0) + n;
  }
  const ok = okSeries.reduce((a, b) => a + b, 0);
  return {
    lib: worker.lib,
    ok,
    errors: errorSeries.reduce((a, b) => a + b, 0),
    lostWrites: await countMissing(target, worker.reports.flatMap((r) => r.acked)),
    crashes: worker.crashes,
    hung: worker.reports.reduce((n, r) => n + r.hung, 0),
    recoveryMs: median(worker.reports.flatMap((r) => r.recoveries)),
    opsPerSecond: Math.round(ok / seconds),
    okSeries: okSeries.slice(0, seconds),
    errorSeries: errorSeries.slice(0, seconds),
    errorKinds,
  };
}

export const COLUMNS: Array<[string, (s: LibSummary) => string]> = [
  ['errors seen', (s) => String(s.errors)],
  ['lost writes', (s) => String(s.lostWrites)],
  ['crashes', (s) => String(s.crashes)],
  ['hung ops', (s) => String(s.hung)],
  ['recovery ms', (s) => (s.recoveryMs === null ? '-' : String(s.recoveryMs))],
  ['ops/s', (s) => String(s.opsPerSecond)],
];

export function textTable(libs: LibSummary[]): string {
  const rows = [['', ...COLUMNS.map(([name]) => name)], ...libs.map((s) => [LABEL[s.lib], ...COLUMNS.map(([, get]) => get(s))])];
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (row: string[]): string => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ');
  const [header, ...body] = rows;
  return [line(header ?? []), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** The most frequent error kinds per library, for the lines under the table. */
export function topErrors(summary: LibSummary, n = 3): string[] {
  return Object.entries(summary.errorKinds)
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([kind, count]) => `${count} x ${kind}`);
}
