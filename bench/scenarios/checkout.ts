import type { Lib } from '../targets.js';
import { interleave, type Cell, type Results } from './interleave.js';

export const CHECKOUT_CONCURRENCIES = [1, 16] as const;

/** Scenario 2: connect() + release() with no query: the pool's own overhead. */
export function checkout(libs: Lib[], rounds: number, ms: number, warmMs: number): Promise<Results> {
  const cells: Cell[] = CHECKOUT_CONCURRENCIES.map((concurrency) => ({
    key: `checkout c${concurrency}`,
    concurrency,
    op: (lib) => {
      const get = lib.checkout;
      return get ? async () => (await get())() : undefined;
    },
  }));
  return interleave(libs, cells, rounds, ms, warmMs);
}
