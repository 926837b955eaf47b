// pg-boss's `db` option over pg-lifeline's Pool. Structural types only: pg-lifeline does not depend
// on pg-boss, and this file is the shape pg-boss 12 calls (`IDatabase`), nothing more.
import type { Pool } from '../pool.js';

/** What pg-boss calls on its `db` option (its `IDatabase`: `executeSql`, and `poolCounts` for its instance registry). */
export interface PgBossDatabase {
  /** Runs one of pg-boss's statements (or several, in one text) and gives back all their rows. */
  executeSql(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
  /** The pool's size and use, which pg-boss records on each heartbeat. */
  poolCounts(): { max: number; total: number; idle: number; waiting: number } | null;
}

/**
 * pg-boss's `db` option, running its SQL through `pool.query`: `new PgBoss({ db: pgBossDb(pool) })`.
 * The statements are not marked idempotent, on purpose: pg-boss's job SQL (fetch, complete, fail)
 * changes state, so only a statement that provably never reached the server is retried, which is
 * `pool.query`'s default. pg-boss does not end a pool it was given: end it after `boss.stop()`.
 */
export function pgBossDb(pool: Pool): PgBossDatabase {
  return {
    async executeSql(text, values) {
      // A text with several statements (pg-boss's schema and migrations) yields one result per statement.
      const result = (await pool.query(text, values)) as unknown as { rows: unknown[] } | Array<{ rows?: unknown[] }>;
      return Array.isArray(result) ? { rows: result.flatMap((r) => r.rows ?? []) } : { rows: result.rows };
    },
    poolCounts() {
      if (pool.ended) return null;
      return { max: pool.options.max, total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount };
    },
  };
}
