// pg-boss's `db` option over pg-lifeline's Pool. Structural types only: pg-lifeline does not depend
// on pg-boss, and this file is the shape pg-boss 12 calls (`IDatabase`), nothing more.
import { TransactionRolledBackError } from '../errors.js';
import type { Pool } from '../pool.js';

/** What `listen` hands back: pg-boss calls `close()` when it stops. */
export interface PgBossListenHandle {
  close(): Promise<void>;
}

/** A transaction pg-boss opened with `beginTransaction()`, settled later by `commit()` or `rollback()`. */
export interface PgBossTransaction {
  /** Runs statements inside the transaction; refuses once it is settled. */
  db: Pick<PgBossDatabase, 'executeSql'>;
  /** COMMITs and releases the connection. Rejects if the COMMIT fails, rolled back, or the transaction was settled already. */
  commit(): Promise<void>;
  /** ROLLBACKs and releases the connection. Never rejects and never waits long: past a deadline the connection is dropped. */
  rollback(): Promise<void>;
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
  /** Opens a transaction on a connection of its own (`pool.connect()`), for transactional workers. */
  beginTransaction(): Promise<PgBossTransaction>;
}

// pg-boss's own Db rejects when its first connect or LISTEN fails, and pg-boss then polls only.
// pool.listen() would wait for the server instead, which would hold up boss.start(): bound that wait.
const FIRST_LISTEN_TIMEOUT_MILLIS = 10_000;
// A ROLLBACK queues behind the statement in flight, which may never end: past this, drop the
// connection instead, and the server rolls back with it. pg-boss's own Db waits as long.
const ROLLBACK_TIMEOUT_MILLIS = 5000;

// A text with several statements (pg-boss's schema and migrations) yields one result per statement.
function rowsOf(result: unknown): { rows: unknown[] } {
  const shaped = result as { rows: unknown[] } | Array<{ rows?: unknown[] }>;
  return Array.isArray(shaped) ? { rows: shaped.flatMap((r) => r.rows ?? []) } : { rows: shaped.rows };
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
      return rowsOf(await pool.query(text, values));
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
    beginTransaction: () => beginTransaction(pool),
  };
}

async function beginTransaction(pool: Pool): Promise<PgBossTransaction> {
  const client = await pool.connect();
  let settled = false;
  // Exactly once; with an error, the pool drops the connection instead of reusing it mid-transaction.
  const release = (error?: Error): void => {
    if (settled) return;
    settled = true;
    client.release(error);
  };
  const asError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)));
  try {
    await client.query('BEGIN');
  } catch (error) {
    release(asError(error));
    throw error;
  }
  return {
    db: {
      // A late statement from a handler that outlived its timeout must not run on a connection given back.
      executeSql: async (text, values) => {
        if (settled) throw new Error('This pg-boss transaction is already settled.');
        return rowsOf(await client.query(text, values));
      },
    },
    async commit() {
      if (settled) throw new Error('This pg-boss transaction is already settled.');
      let result: { command?: string };
      try {
        result = await client.query('COMMIT');
      } catch (error) {
        release(asError(error));
        throw error;
      }
      release();
      // A statement that failed inside (and was caught) turns COMMIT into ROLLBACK without an error.
      if (result.command === 'ROLLBACK') throw new TransactionRolledBackError();
    },
    async rollback() {
      if (settled) return;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`ROLLBACK did not complete within ${ROLLBACK_TIMEOUT_MILLIS} ms`)), ROLLBACK_TIMEOUT_MILLIS);
      });
      try {
        await Promise.race([client.query('ROLLBACK'), deadline]);
        release();
      } catch (error) {
        release(asError(error));
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
