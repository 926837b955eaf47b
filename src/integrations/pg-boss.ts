// pg-boss's `db` option over pg-lifeline's Pool. Structural types only: pg-lifeline does not depend
// on pg-boss, and this file is the shape pg-boss 12 calls (`IDatabase`), nothing more.
import type { Pool } from '../pool.js';

/** What `listen` hands back: pg-boss calls `close()` when it stops. */
export interface PgBossListenHandle {
  close(): Promise<void>;
}

/** What pg-boss calls on its `db` option (its `IDatabase`: `executeSql`, `poolCounts` for its instance registry, and `listen` for `useListenNotify`). */
export interface PgBossDatabase {
  /** Runs one of pg-boss's statements (or several, in one text) and gives back all their rows. */
  executeSql(text: string, values?: unknown[]): Promise<{ rows: unknown[] }>;
  /** The pool's size and use, which pg-boss records on each heartbeat. */
  poolCounts(): { max: number; total: number; idle: number; waiting: number } | null;
  /**
   * Listens to pg-boss's channel on the pool's LISTEN session (`pool.listen()`). `onReconnect` runs
   * after the first LISTEN and after every re-LISTEN, so pg-boss fetches what a lost notification
   * would have woken.
   */
  listen(channel: string, onNotification: (payload: string) => void, onReconnect: () => void): Promise<PgBossListenHandle>;
}

// pg-boss's own Db rejects when its first connect or LISTEN fails, and pg-boss then polls only.
// pool.listen() would wait for the server instead, which would hold up boss.start(): bound that wait.
const FIRST_LISTEN_TIMEOUT_MILLIS = 10_000;

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
    async listen(channel, onNotification, onReconnect) {
      // Not AbortSignal.timeout(): aborting after the first LISTEN would close the listener.
      const firstWait = new AbortController();
      const timer = setTimeout(() => firstWait.abort(new Error(`the first LISTEN took longer than ${FIRST_LISTEN_TIMEOUT_MILLIS} ms`)), FIRST_LISTEN_TIMEOUT_MILLIS);
      let listener;
      try {
        listener = await pool.listen(
          channel,
          (message) => {
            if (message.payload !== undefined) onNotification(message.payload);
          },
          { onReconnect: () => onReconnect(), signal: firstWait.signal },
        );
      } finally {
        clearTimeout(timer);
      }
      // pg-boss's own Db calls it after the first LISTEN too.
      onReconnect();
      return { close: () => listener.close() };
    },
  };
}
