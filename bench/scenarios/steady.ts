import type { Lib } from '../targets.js';
import { randomId } from '../targets.js';
import { interleave, type Cell, type Results } from './interleave.js';

export const QUERIES = ['SELECT 1', 'PK read', 'INSERT'] as const;
export const CONCURRENCIES = [1, 16, 64] as const;
export type Query = (typeof QUERIES)[number];

export function opFor(lib: Lib, query: Query): (i: number) => Promise<unknown> {
  if (query === 'SELECT 1') return () => lib.select1();
  if (query === 'PK read') return () => lib.pkRead(randomId());
  return (i) => lib.insert(i);
}

/** Scenario 1: throughput and latency; the pipeline client only joins at concurrency 16 and 64. */
export function steady(libs: Lib[], rounds: number, ms: number, warmMs: number): Promise<Results> {
  const cells: Cell[] = [];
  for (const query of QUERIES) {
    for (const concurrency of CONCURRENCIES) {
      cells.push({
        key: `${query} c${concurrency}`,
        concurrency,
        op: (lib) => (lib.name === 'pg pipeline' && concurrency === 1 ? undefined : opFor(lib, query)),
      });
    }
  }
  return interleave(libs, cells, rounds, ms, warmMs);
}
