import type pg from 'pg';
import { ConfigError, TransactionRolledBackError } from '../errors.js';

/** SQL isolation levels, as `BEGIN ISOLATION LEVEL` spells them. */
export type IsolationLevel = 'read uncommitted' | 'read committed' | 'repeatable read' | 'serializable';

/** Options of `pool.transaction()`. */
export interface TransactionOptions {
  /** Default: the server's `default_transaction_isolation`. */
  readonly isolationLevel?: IsolationLevel | undefined;
  /** Start a READ ONLY transaction. */
  readonly readOnly?: boolean | undefined;
  /** Give up waiting for a connection when this signal aborts. */
  readonly signal?: AbortSignal | undefined;
}

const LEVELS: ReadonlySet<string> = new Set(['read uncommitted', 'read committed', 'repeatable read', 'serializable']);

/** The BEGIN statement for `options`; throws {@link ConfigError} for a bad one. */
export function beginStatement(options: TransactionOptions | undefined): string {
  let sql = 'BEGIN';
  const level = options?.isolationLevel;
  if (level !== undefined) {
    if (typeof level !== 'string' || !LEVELS.has(level.toLowerCase())) {
      throw new ConfigError('isolationLevel', `one of ${[...LEVELS].map((l) => `'${l}'`).join(', ')}`, level);
    }
    sql += ` ISOLATION LEVEL ${level.toUpperCase()}`;
  }
  const readOnly = options?.readOnly;
  if (readOnly !== undefined && typeof readOnly !== 'boolean') throw new ConfigError('readOnly', 'true or false', readOnly);
  if (readOnly === true) sql += ' READ ONLY';
  return sql;
}

/**
 * Runs `fn` between `begin` and COMMIT on `client`, rolling back if it throws. A COMMIT that the
 * server answers with ROLLBACK (the transaction had failed) throws instead of passing silently.
 */
export async function runTransaction<C extends pg.PoolClient, T>(client: C, begin: string, fn: (client: C) => Promise<T> | T): Promise<T> {
  await client.query(begin);
  let result: T;
  try {
    result = await fn(client);
  } catch (error) {
    // If the rollback fails too, the connection is broken; the release that follows discards it.
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
  const commit = await client.query('COMMIT');
  if (commit.command === 'ROLLBACK') throw new TransactionRolledBackError();
  return result;
}
