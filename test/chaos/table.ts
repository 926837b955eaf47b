import type { LibResult, ScenarioResult } from './report.js';

const COLUMNS: Array<[string, (r: LibResult) => string]> = [
  ['ok', (r) => String(r.report.ok)],
  ['failed', (r) => String(r.report.failed)],
  ['retry-safe failures', (r) => String(r.report.retrySafeFailures)],
  ['unknown outcome', (r) => String(r.report.unknownOutcome)],
  ['hung', (r) => String(r.report.hung)],
  ['crashed', (r) => (r.crashed ? 'yes' : 'no') + (r.reported ? '' : '?')],
  ['acked-missing', (r) => String(r.ackedMissing.length)],
  ['present-but-failed', (r) => String(r.presentButFailed.length)],
  ['applied-twice', (r) => String(r.appliedTwice.length)],
  ['recovery ms', (r) => (r.recoveryMs === null ? '-' : String(r.recoveryMs))],
];

/** Rows of cells: a header, then one row per scenario with "pg-lifeline / pg" in every cell. */
function cells(results: ScenarioResult[]): string[][] {
  const header = ['scenario', ...COLUMNS.map(([name]) => name)];
  const base = Math.min(...results.map((s) => s.seconds));
  const rows = results.map((s) => [s.seconds === base ? s.name : `${s.name} (${s.seconds} s)`, ...COLUMNS.map(([, get]) => `${get(s.libs['pg-lifeline'])} / ${get(s.libs.pg)}`)]);
  return [header, ...rows];
}

function widths(table: string[][]): number[] {
  return (table[0] ?? []).map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length)));
}

const LEGEND =
  'each cell: pg-lifeline / pg.Pool; recovery = median ms from fault end to the first successful op; ' +
  "crashed '?' = the worker wrote no report (its counts are 0)";

export function plainTable(results: ScenarioResult[]): string {
  const table = cells(results);
  const w = widths(table);
  const line = (row: string[]): string => row.map((cell, i) => (i === 0 ? cell.padEnd(w[i] ?? 0) : cell.padStart(w[i] ?? 0))).join('  ');
  const rule = w.map((n) => '-'.repeat(n)).join('  ');
  const [header, ...rows] = table;
  return [`chaos suite (${LEGEND})`, line(header ?? []), rule, ...rows.map(line)].join('\n');
}

export function markdownTable(results: ScenarioResult[]): string {
  const table = cells(results);
  const w = widths(table);
  const line = (row: string[]): string => `| ${row.map((cell, i) => (i === 0 ? cell.padEnd(w[i] ?? 0) : cell.padStart(w[i] ?? 0))).join(' | ')} |`;
  const rule = `|${w.map((n, i) => (i === 0 ? `:${'-'.repeat(n + 1)}` : `${'-'.repeat(n + 1)}:`)).join('|')}|`;
  const [header, ...rows] = table;
  return [`_${LEGEND}._`, '', line(header ?? []), rule, ...rows.map(line), ''].join('\n');
}
