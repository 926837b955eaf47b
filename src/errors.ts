/**
 * Every error pg-lifeline raises itself. Each has a stable `code` (never an SQLSTATE, so it
 * cannot be confused with one), keeps what it wraps in `cause`, and says what to do.
 */

/** Stable codes of pg-lifeline's own errors. */
export type LifelineErrorCode =
  | 'PGL_CONFIG'
  | 'PGL_ACQUIRE_TIMEOUT'
  | 'PGL_ABORTED'
  | 'PGL_POOL_ENDED'
  | 'PGL_CONNECT_FAILED'
  | 'PGL_CONNECTION_LOST'
  | 'PGL_CLIENT_RELEASED'
  | 'PGL_DOUBLE_RELEASE'
  | 'PGL_TRANSACTION_ROLLED_BACK';

/** Base class of every pg-lifeline error. */
export abstract class LifelineError extends Error {
  /** Stable, documented identifier of the failure. */
  abstract readonly code: LifelineErrorCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An option was of the wrong type or out of range. Thrown by `new Pool()` and by methods given bad options. */
export class ConfigError extends LifelineError {
  readonly code = 'PGL_CONFIG';
  /** The option at fault, as the user spelled it. */
  readonly option: string;

  constructor(option: string, expected: string, received: unknown) {
    super(`Invalid pool option \`${option}\`: expected ${expected}, got ${describe(received)}.`);
    this.option = option;
  }
}

/** Counts of the pool when an acquire gave up. */
export interface PoolCounts {
  readonly total: number;
  readonly idle: number;
  readonly waiting: number;
  /** Connections still being opened. */
  readonly opening: number;
  readonly max: number;
}

/** Why an acquire ran out of time. */
export type AcquireTimeoutReason = 'exhausted' | 'unreachable';

/**
 * No connection could be handed out before the acquire deadline (`connectionTimeoutMillis`).
 * `reason` tells the two cases apart: every connection stayed checked out (`exhausted`), or
 * new connections could not be opened (`unreachable`, with the last connect error as `cause`).
 */
export class AcquireTimeoutError extends LifelineError {
  readonly code = 'PGL_ACQUIRE_TIMEOUT';
  readonly reason: AcquireTimeoutReason;
  readonly waitedMillis: number;
  readonly counts: PoolCounts;

  /**
   * `lastConnectError` is the last failed open since the last successful one (undefined if none);
   * a pool with opens still pending and none failed counts as unreachable too.
   */
  constructor(waitedMillis: number, counts: PoolCounts, lastConnectError: unknown) {
    const unreachable = lastConnectError !== undefined || counts.opening > 0;
    const why = lastConnectError !== undefined ? `last connect error: ${errorText(lastConnectError)}` : `${counts.opening} connect attempt(s) still unanswered`;
    const message = unreachable
      ? `Timed out after ${waitedMillis} ms waiting for a connection: the server could not be reached ` +
        `(${why}). Check that PostgreSQL is running and reachable at the configured host and port, ` +
        `or raise connectionTimeoutMillis to ride out restarts.`
      : `Timed out after ${waitedMillis} ms waiting for a connection: the pool is exhausted ` +
        `(${counts.total}/${counts.max} open, ${counts.idle} idle, ${counts.waiting} waiting). ` +
        `Release clients promptly (pool.withClient releases for you), raise max, or raise connectionTimeoutMillis.`;
    super(message, lastConnectError !== undefined ? { cause: lastConnectError } : undefined);
    this.reason = unreachable ? 'unreachable' : 'exhausted';
    this.waitedMillis = waitedMillis;
    this.counts = counts;
  }
}

/** The caller's AbortSignal fired while it waited. The signal's reason is the `cause`. */
export class AbortedError extends LifelineError {
  readonly code = 'PGL_ABORTED';

  constructor(what: string, reason: unknown) {
    super(`${what} was aborted by its AbortSignal.`, { cause: reason });
  }
}

/** The pool was used after `end()` was called, or `end()` was called twice. */
export class PoolEndedError extends LifelineError {
  readonly code = 'PGL_POOL_ENDED';

  constructor(message = 'Cannot use a pool after calling end on the pool. Create a new Pool, or stop using this one before end().') {
    super(message);
  }
}

/**
 * Opening a connection failed in a way that retrying will not fix: bad credentials, an unknown
 * database, a rejected TLS setting, or the app's own `onConnect` / `verify` hook throwing.
 */
export class ConnectFailedError extends LifelineError {
  readonly code = 'PGL_CONNECT_FAILED';
  /** The server's SQLSTATE, when the server refused the connection. */
  readonly sqlState: string | undefined;

  constructor(cause: unknown, hint: string) {
    super(`Could not open a connection: ${errorText(cause)}. ${hint}`, { cause });
    this.sqlState = sqlStateOf(cause);
  }
}

/** Facts about a connection at the moment it failed. */
export interface ConnectionFacts {
  /** Milliseconds since the connection was opened. */
  readonly ageMillis: number;
  /** Milliseconds it had sat idle in the pool before the checkout that failed. */
  readonly idleMillis: number;
}

/**
 * The connection under a query died: the server ended the session, restarted or crashed, or
 * the network dropped. The pool has already removed the connection. Whether the statement ran
 * is not known unless `cause` says the server refused it.
 */
export class ConnectionLostError extends LifelineError implements ConnectionFacts {
  readonly code = 'PGL_CONNECTION_LOST';
  readonly sqlState: string | undefined;
  readonly ageMillis: number;
  readonly idleMillis: number;

  constructor(cause: unknown, facts: ConnectionFacts) {
    super(
      `Connection lost (${errorText(cause)}) after ${Math.round(facts.ageMillis / 1000)} s open and ` +
        `${Math.round(facts.idleMillis / 1000)} s idle before this checkout. The pool removed it; ` +
        `run the work again on a new connection if it is safe to repeat.`,
      { cause },
    );
    this.sqlState = sqlStateOf(cause);
    this.ageMillis = facts.ageMillis;
    this.idleMillis = facts.idleMillis;
  }
}

const TRACE_HINT =
  ' Where it was released was not recorded: with releaseTraces left at its default, the pool starts ' +
  'recording release sites after this first misuse, so the next one will say; or set releaseTraces: true.';

/**
 * A client was used after it went back to the pool: it may belong to other work by now.
 * `releasedAt` is the stack of the `release()` call, when release traces are on.
 */
export class ClientReleasedError extends LifelineError {
  readonly code = 'PGL_CLIENT_RELEASED';
  readonly releasedAt: string | undefined;

  constructor(operation: string, releasedAt: string | undefined) {
    super(
      `Cannot call ${operation}() on a client that was already released to the pool. ` +
        `Keep every use of a client between pool.connect() and its release() ` +
        `(pool.withClient does this for you), and do not share one client across concurrent work.` +
        (releasedAt === undefined ? TRACE_HINT : `\nReleased at:\n${releasedAt}`),
    );
    this.releasedAt = releasedAt;
  }
}

/** `release()` was called a second time on the same checkout. */
export class DoubleReleaseError extends LifelineError {
  readonly code = 'PGL_DOUBLE_RELEASE';
  readonly releasedAt: string | undefined;

  constructor(releasedAt: string | undefined) {
    super(
      'Release called on client which has already been released to the pool. ' +
        'Call release() exactly once per connect().' +
        (releasedAt === undefined ? TRACE_HINT : `\nFirst released at:\n${releasedAt}`),
    );
    this.releasedAt = releasedAt;
  }
}

/**
 * COMMIT answered ROLLBACK: the transaction had already failed (a statement inside it raised an
 * error that was caught and ignored), so nothing it did was saved.
 */
export class TransactionRolledBackError extends LifelineError {
  readonly code = 'PGL_TRANSACTION_ROLLED_BACK';

  constructor() {
    super(
      'The transaction was rolled back instead of committed: a statement inside it failed earlier. ' +
        'Nothing it wrote was saved. Let errors inside the transaction propagate, or use a SAVEPOINT to recover from one.',
    );
  }
}

/** The SQLSTATE of a server error, if `err` is one. */
export function sqlStateOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return String(value);
}
