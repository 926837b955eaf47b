import { median, runLoad, type LoadResult } from '../lib.js';
import type { Lib } from '../targets.js';

export interface Cell {
  key: string;
  concurrency: number;
  /** The operation for this library, or undefined when it does not apply. */
  op(lib: Lib): ((i: number) => Promise<unknown>) | undefined;
}

export interface Summary {
  opsPerSec: number;
  p50: number;
  p99: number;
  errors: number;
  /** (max - min) / median of the rounds' ops/s: how noisy the cell was. */
  spread: number;
  /** ops/s of each round, in round order, for paired (same-round) ratios. */
  rounds: number[];
  firstError?: string;
}

export type Results = Map<string, Map<string, Summary>>; // cell key -> lib name -> medians

/** Rounds x cells x libraries, library order rotated each round; medians over rounds. */
export async function interleave(libs: Lib[], cells: Cell[], rounds: number, ms: number, warmMs: number): Promise<Results> {
  const raw = new Map<string, Map<string, LoadResult[]>>();
  for (let round = 0; round < rounds; round++) {
    const order = libs.map((_, i) => libs[(i + round) % libs.length]!);
    for (const cell of cells) {
      for (const lib of order) {
        const op = cell.op(lib);
        if (!op) continue;
        await runLoad(op, cell.concurrency, warmMs);
        const result = await runLoad(op, cell.concurrency, ms);
        const byLib = raw.get(cell.key) ?? new Map<string, LoadResult[]>();
        raw.set(cell.key, byLib);
        byLib.set(lib.name, [...(byLib.get(lib.name) ?? []), result]);
      }
    }
  }
  const out: Results = new Map();
  for (const [key, byLib] of raw) {
    const m = new Map<string, Summary>();
    for (const [name, rs] of byLib) {
      const ops = rs.map((r) => r.opsPerSec);
      const s: Summary = {
        opsPerSec: median(ops),
        spread: (Math.max(...ops) - Math.min(...ops)) / median(ops),
        rounds: ops,
        p50: median(rs.map((r) => r.p50)),
        p99: median(rs.map((r) => r.p99)),
        errors: rs.reduce((a, r) => a + r.errors, 0),
      };
      const firstError = rs.find((r) => r.firstError)?.firstError;
      if (firstError !== undefined) s.firstError = firstError;
      m.set(name, s);
    }
    out.set(key, m);
  }
  return out;
}

/** Median over rounds of a/b within the same round: slow drift on the machine cancels out. */
export function pairedRatio(a: Summary | undefined, b: Summary | undefined): number {
  if (!a || !b) return NaN;
  return median(a.rounds.map((x, i) => x / (b.rounds[i] ?? NaN)));
}

/** The lowest and highest of the per-round ratios behind {@link pairedRatio}: how far noise moves it. */
export function pairedRange(a: Summary | undefined, b: Summary | undefined): [number, number] {
  if (!a || !b) return [NaN, NaN];
  const ratios = a.rounds.map((x, i) => x / (b.rounds[i] ?? NaN));
  return [Math.min(...ratios), Math.max(...ratios)];
}
