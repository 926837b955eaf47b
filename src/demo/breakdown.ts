// The story per fault: what each library's app saw in each fault window, the headline over all of
// them, and the errors grouped by code and cause.
import { LABEL, TICK_MS, type DemoResult, type ErrorKind, type ErrorOutcome, type FaultWindow, type Lib, type LibSummary, type ToldWindow } from './model.js';

/**
 * An op counts under the fault that last struck before it started, from this long before the
 * fault (ops already in flight when it struck) until the next fault's turn.
 */
export const LEAD_SECONDS = 0.5;
export const BETWEEN_FAULTS = 'between faults';

/** What one library's app saw in one fault window. */
export interface Cell {
  unknown: number;
  notApplied: number;
  other: number;
  crashes: number;
  hung: number;
  /** ms from the fault's end (an idle window: each gap's end, the worst) to the next success; null: none. */
  firstOkMs: number | null;
  /** LISTEN lane: notifications sent in this row's span, how many this library's listener got, and lost. */
  sent: number;
  heard: number;
  lost: number;
  /** Of the lost, those inside a loss window the listener told the app of (see {@link toldOf}). */
  told: number;
}

/** One row of the per-fault table. */
export interface FaultRow {
  label: string;
  /** Seconds from t0; null for the row of ops outside every fault's span. */
  start: number | null;
  cells: Record<Lib, Cell>;
}

/** ms from the end of `window` (or of its last-recovering idle gap) to the first success in `okTicks` (ascending). */
export function firstSuccessMs(window: FaultWindow, okTicks: number[]): number | null {
  const ends = window.gaps?.length ? window.gaps.map((g) => g.end) : [window.end];
  let worst: number | null = null;
  for (const end of ends) {
    if (end === undefined) return null;
    const tick = Math.floor((end * 1000) / TICK_MS);
    let lo = 0;
    let hi = okTicks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((okTicks[mid] ?? 0) < tick) lo = mid + 1;
      else hi = mid;
    }
    const found = okTicks[lo];
    if (found === undefined) return null;
    worst = Math.max(worst ?? 0, Math.round(Math.max(0, found * TICK_MS - end * 1000)));
  }
  return worst;
}

const emptyCell = (): Cell => ({ unknown: 0, notApplied: 0, other: 0, crashes: 0, hung: 0, firstOkMs: null, sent: 0, heard: 0, lost: 0, told: 0 });
const OUTCOME_FIELD: Record<ErrorOutcome, 'unknown' | 'notApplied' | 'other'> = { unknown: 'unknown', 'not-applied': 'notApplied', other: 'other' };

/** One row per fault window, after a row for whatever happened outside them. */
export function faultRows(result: DemoResult): FaultRow[] {
  const windows = result.windows;
  const between: FaultRow = { label: BETWEEN_FAULTS, start: null, cells: { pg: emptyCell(), 'pg-lifeline': emptyCell() } };
  const rows: FaultRow[] = windows.map((w) => ({ label: w.label, start: w.start, cells: { pg: emptyCell(), 'pg-lifeline': emptyCell() } }));
  const rowAt = (seconds: number): FaultRow => {
    for (let i = windows.length - 1; i >= 0; i--) if (seconds >= (windows[i]?.start ?? Infinity) - LEAD_SECONDS) return rows[i] ?? between;
    return between;
  };
  for (const lib of result.libs) {
    const heard = new Set(lib.heard);
    for (const notification of result.sent) {
      const cell = rowAt(notification[0] / 1000).cells[lib.lib];
      cell.sent++;
      if (heard.has(notification[0])) cell.heard++;
      else {
        cell.lost++;
        if (toldOf(notification, lib.told)) cell.told++;
      }
    }
    for (const [startMs, key] of lib.errorsAt) {
      const kind = lib.errorKinds[key];
      if (kind) rowAt(startMs / 1000).cells[lib.lib][OUTCOME_FIELD[kind.outcome]]++;
    }
    for (const at of lib.crashAt) rowAt(at).cells[lib.lib].crashes++;
    for (const startMs of lib.hungAt) rowAt(startMs / 1000).cells[lib.lib].hung++;
    windows.forEach((w, i) => {
      const cell = rows[i]?.cells[lib.lib];
      if (cell) cell.firstOkMs = firstSuccessMs(w, lib.okTicks);
    });
  }
  return [between, ...rows];
}

/**
 * Whether the app was told it may lose this notification: its NOTIFY, from its send to its
 * acknowledgement, overlaps a window the listener reported (from its start to the moment the
 * listener listened again, or its worker process exited).
 */
export function toldOf([sentAt, ackedAt]: [number, number], windows: ToldWindow[]): boolean {
  return windows.some(([from, to]) => ackedAt >= from && sentAt <= (to ?? Infinity));
}

/** A library's LISTEN totals over the run. */
export function listenTotals(lib: LibSummary, sent: Array<[number, number]>): { sent: number; delivered: number; lost: number; told: number } {
  const heard = new Set(lib.heard);
  const lost = sent.filter(([at]) => !heard.has(at));
  return { sent: sent.length, delivered: sent.length - lost.length, lost: lost.length, told: lost.filter((n) => toldOf(n, lib.told)).length };
}

function totals(lib: LibSummary): { errors: number; unknown: number; notApplied: number; other: number } {
  const t = { errors: 0, unknown: 0, notApplied: 0, other: 0 };
  for (const kind of Object.values(lib.errorKinds)) {
    t.errors += kind.count;
    t[OUTCOME_FIELD[kind.outcome]] += kind.count;
  }
  return t;
}

/** The last notifications count as delivered only after this long. */
const DELIVERY_MS = 1_500;

/** Whether the library's listener still received notifications at the end of the run; null: none were sent then. */
export function listenerAlive(lib: LibSummary, sent: Array<[number, number]>, seconds: number): boolean | null {
  const recent = sent.map(([at]) => at).filter((t) => t <= seconds * 1000 - DELIVERY_MS).slice(-2);
  if (recent.length === 0) return null;
  const heard = new Set(lib.heard);
  return recent.some((t) => heard.has(t));
}

/** One sentence with each library's totals. */
export function headline(libs: LibSummary[], sent: Array<[number, number]>, seconds: number): string {
  const parts = libs.map((lib) => {
    const alive = listenerAlive(lib, sent, seconds);
    const l = listenTotals(lib, sent);
    const losses = l.lost === 0 ? '' : ` (lost ${l.lost}, told the app of ${l.told === l.lost ? 'all' : l.told})`;
    const listen = `, LISTEN got ${l.delivered}/${l.sent}${losses}${alive === null ? '' : alive ? ' and was alive at the end' : ' and was deaf at the end'}`;
    const t = totals(lib);
    const split = `${t.unknown} outcome unknown, ${t.notApplied} not applied`;
    const errors =
      t.errors === 0 ? 'no errors' : t.other === 0 ? `${t.errors} errors, all honest (${split})` : `${t.errors} errors (${split}, ${t.other} that do not say)`;
    return `${LABEL[lib.lib]}: ${errors}, ${lib.crashes} crashes, ${lib.hung} hung${sent.length ? listen : ''}`;
  });
  return `${parts.join('; ')}.`;
}

/** The per-fault table's cells for one library, as text. */
export const CELL_COLUMNS: Array<[string, (c: Cell) => string]> = [
  ['unknown', (c) => String(c.unknown)],
  ['not applied', (c) => String(c.notApplied)],
  ['other', (c) => String(c.other)],
  ['crashes', (c) => String(c.crashes)],
  ['hung', (c) => String(c.hung)],
  ['first ok', (c) => (c.firstOkMs === null ? 'never' : `${c.firstOkMs} ms`)],
];

/** The LISTEN table's cells for one library, as text. */
export const LISTEN_COLUMNS: Array<[string, (c: Cell) => string]> = [
  ['delivered', (c) => String(c.heard)],
  ['lost', (c) => String(c.lost)],
  ['told', (c) => String(c.told)],
];

/** Lays out rows of cells in aligned columns: the first left-aligned, the rest right-aligned. */
export function alignRows(rows: string[][], ruleAfter = 1): string {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const line = (row: string[]): string => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [...rows.slice(0, ruleAfter).map(line), rule, ...rows.slice(ruleAfter).map(line)].join('\n');
}

/** The label of a row, with its start time. */
export const rowLabel = (row: FaultRow): string => (row.start === null ? row.label : `${row.start.toFixed(1)} s ${row.label}`);

/** The per-fault table for the terminal: CELL_COLUMNS, or with `listen`, the LISTEN lane's sent and LISTEN_COLUMNS. */
export function faultTextTable(rows: FaultRow[], libs: Lib[], listen = false): string {
  const columns = listen ? LISTEN_COLUMNS : CELL_COLUMNS;
  const lead = listen ? ['fault', 'sent'] : ['fault'];
  const groups = [...lead.map(() => ''), ...libs.flatMap((lib) => columns.map((_, i) => (i === 0 ? `${LABEL[lib]}:` : '')))];
  const header = [...lead, ...libs.flatMap(() => columns.map(([name]) => name))];
  // A row outside every fault has no fault to recover from. Both libraries hear the one publisher.
  const body = rows.map((row) => [
    rowLabel(row),
    ...(listen ? [String(row.cells[libs[0] ?? 'pg'].sent)] : []),
    ...libs.flatMap((lib) => columns.map(([name, get]) => (row.start === null && name === 'first ok' ? '-' : get(row.cells[lib])))),
  ]);
  const text = alignRows([header, ...body]);
  // The group labels sit above each library's first column, left-aligned to it.
  const firstLine = text.split('\n')[0] ?? '';
  let groupLine = '';
  const starts = columnStarts(firstLine, header);
  groups.forEach((g, i) => g && (groupLine = groupLine.padEnd(starts[i] ?? 0) + g));
  return `${groupLine}\n${text}`;
}

function columnStarts(line: string, cells: string[]): number[] {
  let at = 0;
  return cells.map((cell) => {
    const end = line.indexOf(cell, at) + cell.length;
    at = end;
    return end - cell.length;
  });
}

const OUTCOME_TEXT: Record<ErrorOutcome, string> = { unknown: 'outcome unknown', 'not-applied': 'not applied', other: 'does not say' };

/** A library's errors grouped by outcome, code and cause, most frequent first. */
export function errorGroups(lib: LibSummary): ErrorKind[] {
  return Object.values(lib.errorKinds).sort((a, b) => b.count - a.count);
}

/** "57P01 (PGL_OUTCOME_UNKNOWN), cause admin-terminated, outcome unknown": the codes exactly as the error gave them. */
export function describeKind(kind: ErrorKind): string {
  const code = kind.code || '(no code)';
  const lifeline = kind.lifelineCode ? ` (${kind.lifelineCode})` : '';
  const cause = kind.cause ? `, cause ${kind.cause}` : '';
  return `${code}${lifeline}${cause}, ${OUTCOME_TEXT[kind.outcome]}`;
}

/** `text` whole if it fits, else cut at the last word boundary before `max` with an ellipsis. */
export function shorten(text: string, max: number): string {
  if (text.length <= max) return text;
  const cut = text.lastIndexOf(' ', max - 1);
  return `${text.slice(0, cut > 0 ? cut : max - 1).replace(/[\s,.;:]+$/, '')}…`;
}

/** The error summaries for the terminal: each group, with one example message. */
export function errorText(libs: LibSummary[], perLib = 6, exampleMax = 700): string {
  const lines: string[] = [];
  for (const lib of libs) {
    const groups = errorGroups(lib);
    lines.push(`${LABEL[lib.lib]} errors by code and cause${groups.length ? '' : ': none'}`);
    for (const kind of groups.slice(0, perLib)) {
      lines.push(`  ${String(kind.count).padStart(5)} x ${describeKind(kind)}`, `          e.g. ${shorten(kind.example, exampleMax)}`);
    }
    if (groups.length > perLib) lines.push(`          and ${groups.length - perLib} more kinds (in the report)`);
  }
  return lines.join('\n');
}
