import type * as pg from 'pg';
import { now } from '../core/resource-pool.js';
import { CommitOutcomeUnknownError, ConfigError, ConnectionLostError, TransactionRolledBackError, sqlStateOf } from '../errors.js';
import { isConnectionError } from './classify.js';
import { resolveCommit, TICKET_SQL, TICKET_WITH_SERVER_SQL, type CommitResolution, type CommitTicket, type ResolverQuery } from './commit-resolver.js';
import type { Lease } from './lease.js';
import type { Attempt } from './retrier.js';

/** SQL isolation levels, as `BEGIN ISOLATION LEVEL` spells them. */
export type IsolationLevel = 'read uncommitted' | 'read committed' | 'repeatable read' | 'serializable';

/** Options of `pool.transaction()`. */
export interface TransactionOptions {
  /** Default: the server's `default_transaction_isolation`. */
  readonly isolationLevel?: IsolationLevel | undefined;
  /** Start a READ ONLY transaction. */
  readonly readOnly?: boolean | undefined;
  /** Give up waiting for a connection, or between retries, when this signal aborts. */
  readonly signal?: AbortSignal | undefined;
  /**
   * Run `fn` again, on a fresh connection, when the transaction certainly did not commit: the
   * connection died before COMMIT, or the server reported a serialization failure (40001) or a
   * deadlock (40P01). `true` uses the pool's `retry.attempts`; a number sets the attempts.
   * `fn` must then have no effects outside the database, since it may run more than once.
   * Default false.
   */
  readonly retry?: boolean | number | undefined;
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

/** What one try of a transaction needs from the pool. */
export interface TransactionHost {
  lease(signal: AbortSignal | undefined): Promise<Lease>;
  /** Runs a statement on a fresh connection, for the commit resolver. */
  readonly resolverQuery: ResolverQuery;
  /** How long to keep asking whether a COMMIT went through. */
  resolveDeadline(): number;
  resolved(resolution: CommitResolution): void;
  /**
   * Whether a transaction that failed with `error` before committing may run again. It never
   * committed, so only the failure's kind matters (a transient failure, or a write refused by a
   * server that is no longer primary), never whether a statement had been sent.
   */
  retryable(error: unknown): boolean;
}

/**
 * One try of a transaction: BEGIN, `fn`, COMMIT. If the connection dies during COMMIT and
 * `track` is on, the transaction's id (learned just before COMMIT) is looked up on a fresh
 * connection, so the caller learns committed (success), aborted (a failure that left nothing
 * behind), or, only if that cannot be found out, {@link CommitOutcomeUnknownError}.
 */
export async function attemptTransaction<T>(
  host: TransactionHost,
  begin: string,
  fn: (client: pg.PoolClient) => Promise<T> | T,
  options: { readonly track: boolean; readonly retry: boolean; readonly signal: AbortSignal | undefined },
): Promise<Attempt<T>> {
  const lease = await host.lease(options.signal);
  const client = lease.client;
  let value: T | undefined;
  let ticket: CommitTicket | undefined;
  let tracked = false;
  let committing = false;
  try {
    await client.query(begin);
    value = await fn(client);
    if (options.track) {
      ticket = await readTicket(lease);
      tracked = ticket !== undefined;
    }
    committing = true;
    const commit = await client.query('COMMIT');
    if (commit.command === 'ROLLBACK') return { ok: false, error: new TransactionRolledBackError(), retry: false };
    return { ok: true, value: value as T };
  } catch (error) {
    const lost = isConnectionError(error);
    // Give the dead connection back first: the resolver needs a connection, maybe this very slot.
    // A live one still inside the transaction is rolled back by the pool before reuse.
    if (!lease.released) lease.release(lost ? error : undefined);
    const retry = options.retry && host.retryable(error);
    if (!committing || !lost) return { ok: false, error: lost ? notApplied(error, lease) : error, retry };
    if (!tracked || ticket === undefined) {
      return { ok: false, error: new CommitOutcomeUnknownError(undefined, 'resolveCommitOutcome is off, so the transaction id was not recorded', error), retry: false };
    }
    if (ticket.xid === null) return { ok: false, error: notApplied(error, lease), retry };
    const resolution = await resolveCommit({ ...ticket, xid: ticket.xid }, host.resolverQuery, host.resolveDeadline());
    host.resolved(resolution);
    if (resolution.status === 'committed') return { ok: true, value: value as T };
    if (resolution.status === 'aborted') return { ok: false, error: notApplied(error, lease), retry };
    return { ok: false, error: new CommitOutcomeUnknownError(ticket.xid, resolution.why, resolution.cause ?? error, error), retry: false };
  } finally {
    if (!lease.released) lease.release();
  }
}

async function readTicket(lease: Lease): Promise<CommitTicket | undefined> {
  type Row = { xid: string | null; pid: number; timeline?: string | null; system?: string | null };
  const known = lease.server();
  const rows = await lease.client.query<Row>(known === undefined ? TICKET_WITH_SERVER_SQL : TICKET_SQL).then(
    (result) => result.rows,
    (error: unknown) => {
      // 25P02: the transaction already failed, so COMMIT will answer ROLLBACK; nothing to track.
      if (sqlStateOf(error) === '25P02') return undefined;
      throw error;
    },
  );
  if (rows === undefined) return undefined;
  const row = rows[0];
  const xid = row?.xid ?? null;
  let server = known;
  if (server === undefined && row?.timeline != null && row.system != null) {
    server = { system: row.system, timeline: row.timeline };
    lease.rememberServer(server);
  }
  return { xid, server, backendPid: row?.pid ?? 0 };
}

// The transaction did not commit, whatever a statement inside it reported: say so plainly.
function notApplied(error: unknown, lease: Lease): unknown {
  if (error instanceof ConnectionLostError && error.outcome === 'not-applied') return error;
  const cause = error instanceof ConnectionLostError ? error.cause : error;
  return new ConnectionLostError(cause, lease.diagnose(cause), 'The transaction did not commit; running it again is safe.');
}

/** A deadline `millis` from now, or Infinity for 0. */
export function deadlineIn(millis: number): number {
  return millis === 0 ? Infinity : now() + millis;
}
