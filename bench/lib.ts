import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };
export const now = (): number => performance.now();

export interface LoadResult {
  ops: number;
  opsPerSec: number;
  p50: number; // ms
  p99: number; // ms
  errors: number;
  firstError?: string;
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function median(values: number[]): number {
  const v = values.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

const MAX_SAMPLES = 500_000;

/** `concurrency` loops run `op` back to back for `ms` (bounded also by MAX_SAMPLES ops). */
export async function runLoad(op: (i: number) => Promise<unknown>, concurrency: number, ms: number): Promise<LoadResult> {
  const lat = new Float64Array(MAX_SAMPLES);
  let n = 0;
  let errors = 0;
  let firstError: string | undefined;
  const start = now();
  const end = start + ms;
  const loop = async (): Promise<void> => {
    while (n < MAX_SAMPLES) {
      const t = now();
      if (t >= end) return;
      try {
        await op(n);
        if (n < MAX_SAMPLES) lat[n++] = now() - t;
      } catch (error) {
        errors++;
        firstError ??= String((error as Error).message ?? error);
        if (errors > 1000) return;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const elapsed = now() - start;
  const sorted = lat.subarray(0, n).sort();
  const result: LoadResult = { ops: n, opsPerSec: (n / elapsed) * 1000, p50: percentile(sorted, 50), p99: percentile(sorted, 99), errors };
  if (firstError !== undefined) result.firstError = firstError;
  return result;
}

/** Settles with the promise's outcome or 'timeout' after `ms`, never hanging. */
export async function within<T>(promise: Promise<T>, ms: number): Promise<{ ok: true; value: T } | { ok: false; error: unknown; timedOut: boolean }> {
  let timer: NodeJS.Timeout | undefined;
  const cap = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    const r = await Promise.race([promise.then((value) => ({ value })), cap]);
    if (r === 'timeout') return { ok: false, error: new Error(`no answer within ${ms} ms`), timedOut: true };
    return { ok: true, value: r.value };
  } catch (error) {
    return { ok: false, error, timedOut: false };
  } finally {
    clearTimeout(timer);
  }
}

export const fmt = (x: number, digits = 0): string =>
  Number.isNaN(x) ? 'n/a' : x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
export const ratio = (a: number, b: number): string => (Number.isNaN(a) || Number.isNaN(b) || b === 0 ? 'n/a' : `${(a / b).toFixed(2)}×`);
export const shortError = (e: unknown): string => {
  const err = e as { code?: string; name?: string; message?: string };
  return `${err.name ?? 'Error'}${err.code ? ` ${err.code}` : ''}: ${(err.message ?? String(e)).split('\n')[0]!.slice(0, 80)}`;
};
