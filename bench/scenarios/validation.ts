import { lifeline, pgPool, type Lib } from '../targets.js';
import { interleave, type Results } from './interleave.js';

export const VALIDATION_VARIANTS = ['pg-lifeline defaults', 'validationWindowMillis: 0', 'validation + keepalive off', 'monitor off (monitorGraceMillis: 0)', 'pg.Pool'] as const;

/** Scenario 3: SELECT 1 at concurrency 16 with checkout validation at its default, always, and off, and the monitor of statements in flight off. */
export async function validation(url: string, rounds: number, ms: number, warmMs: number): Promise<Results> {
  const rename = (lib: Lib, name: string): Lib => ({ ...lib, name: name as Lib['name'] });
  const libs = [
    rename(lifeline(url), VALIDATION_VARIANTS[0]),
    rename(lifeline(url, { validationWindowMillis: 0 }), VALIDATION_VARIANTS[1]),
    rename(lifeline(url, { validationWindowMillis: 2147483647, keepaliveIntervalMillis: 0 }), VALIDATION_VARIANTS[2]),
    rename(lifeline(url, { monitorGraceMillis: 0 }), VALIDATION_VARIANTS[3]),
    rename(pgPool(url), VALIDATION_VARIANTS[4]),
  ];
  try {
    return await interleave(libs, [{ key: 'SELECT 1 c16', concurrency: 16, op: (lib) => () => lib.select1() }], rounds, ms, warmMs);
  } finally {
    await Promise.all(libs.map((l) => l.end()));
  }
}
