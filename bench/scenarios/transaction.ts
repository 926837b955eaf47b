import { lifeline, pgPool, postgresJs, type Lib } from '../targets.js';
import { interleave, type Results } from './interleave.js';

export const TX_VARIANTS = ['pg-lifeline transaction (tracked, default)', 'pg-lifeline transaction, resolveCommitOutcome: false', 'pg.Pool BEGIN/INSERT/COMMIT by hand', 'postgres.js sql.begin'] as const;

/** Scenario 6: one-row insert transactions at concurrency 8. */
export async function transaction(url: string, rounds: number, ms: number, warmMs: number): Promise<Results> {
  const rename = (lib: Lib, name: string): Lib => ({ ...lib, name: name as Lib['name'] });
  const libs = [
    rename(lifeline(url), TX_VARIANTS[0]),
    rename(lifeline(url, { resolveCommitOutcome: false }), TX_VARIANTS[1]),
    rename(pgPool(url), TX_VARIANTS[2]),
    rename(postgresJs(url), TX_VARIANTS[3]),
  ];
  try {
    return await interleave(libs, [{ key: 'tx c8', concurrency: 8, op: (lib) => (i) => lib.transaction!(i) }], rounds, ms, warmMs);
  } finally {
    await Promise.all(libs.map((l) => l.end()));
  }
}
