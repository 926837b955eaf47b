import { sqlStateOf, unwrap, type Outcome } from '../errors.js';

/**
 * What kind of failure an error is. The pool decides from this whether a connection is dead,
 * whether the whole server is suspect, whether opening is worth retrying, and whether a statement
 * may run again.
 */
export type FailureKind =
  /** The session or its socket died: FATAL/PANIC (57P01, 57P02...), ECONNRESET, EPIPE, EOF, TLS drops. */
  | 'connection-lost'
  /** The server ended an idle session (57P05, 25P03): it had not read anything pending. */
  | 'idle-session-ended'
  /** 57P03: the server is starting up or shutting down. */
  | 'server-starting'
  /** 53300: too many connections. */
  | 'too-many-connections'
  /** The server could not be reached at all: ECONNREFUSED, ETIMEDOUT, EHOSTUNREACH, a missing unix socket... */
  | 'unreachable'
  /** 40001: serialization failure; the transaction was rolled back. */
  | 'serialization'
  /** 40P01: deadlock; the transaction was rolled back. */
  | 'deadlock'
  /** 25006: a write reached a read-only server or transaction. */
  | 'read-only'
  /** 28xxx: authentication or authorization failed. */
  | 'auth'
  /** 3D000: no such database. */
  | 'no-database'
  /** 57014: the statement was canceled (statement_timeout, or a cancel request). */
  | 'canceled'
  /** The client-side per-statement deadline (`query_timeout`) passed. */
  | 'query-timeout'
  /** A certificate or TLS handshake problem that retrying will not fix. */
  | 'tls'
  /** An ordinary SQL error: the statement was wrong, not the connection. */
  | 'query'
  | 'unknown';

// Node socket errors after which the socket is unusable.
const SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ENOTCONN', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_WRITE_AFTER_END']);
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EAI_AGAIN']);
const CERT_CODES = new Set(['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'CERT_HAS_EXPIRED', 'ERR_TLS_CERT_ALTNAME_INVALID', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']);

// pg's own wording for a connection that died under it, or a client it will not use.
const DEAD_CONNECTION_MESSAGES = [
  'Connection terminated',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'timeout expired',
  'SSL connection has been closed unexpectedly',
  'The server does not support SSL connections',
];

// pg rejects these before writing a byte of the statement.
const NOT_SENT_MESSAGES = ['Client has encountered a connection error and is not queryable', 'Client was closed and is not queryable'];

/**
 * Sorts `err` into a {@link FailureKind}. An error that only wraps another, with no code of its
 * own (Drizzle's DrizzleQueryError around pg's error), is sorted by what it wraps.
 */
export function classifyFailure(err: unknown): FailureKind {
  return classifyOne(unwrap(err));
}

function classifyOne(err: unknown): FailureKind {
  if (!(err instanceof Error)) return 'unknown';
  const e = err as Error & { code?: unknown; severity?: unknown; lifelineCode?: unknown };
  // pg-lifeline's own errors carry pg's code too; what they are says more than the code.
  if (typeof e.lifelineCode === 'string') return classifyOwn(e.lifelineCode, e.cause);
  const state = sqlStateOf(err);
  if (state !== undefined) {
    if (state === '57P05' || state === '25P03') return 'idle-session-ended';
    if (state === '57P03') return 'server-starting';
    if (state === '53300') return 'too-many-connections';
    if (state === '40001') return 'serialization';
    if (state === '40P01') return 'deadlock';
    if (state === '25006') return 'read-only';
    if (state === '3D000') return 'no-database';
    if (state === '57014') return 'canceled';
    if (state.startsWith('28')) return 'auth';
    if (state === '57P01' || state === '57P02' || e.severity === 'FATAL' || e.severity === 'PANIC') return 'connection-lost';
    // Class 08 also comes as an ordinary ERROR on a live session (08P01 for a wrong bind count,
    // 08001 from dblink or postgres_fdw): only an 08 without the server's severity means the link.
    if (state.startsWith('08') && typeof e.severity !== 'string') return 'connection-lost';
    return 'query';
  }
  const code = typeof e.code === 'string' ? e.code : '';
  // A unix socket whose file is gone: the server is restarting, as ECONNREFUSED over TCP.
  if (code === 'ENOENT' && (e as { syscall?: unknown }).syscall === 'connect') return 'unreachable';
  // Rebuilt by another library from one of ours, keeping only a code pg did not have.
  if (code.startsWith('PGL_')) return classifyOwn(code, e.cause);
  if (e.message.startsWith('Query read timeout')) return 'query-timeout';
  if (CERT_CODES.has(code)) return 'tls';
  if (UNREACHABLE_CODES.has(code)) return 'unreachable';
  if (SOCKET_CODES.has(code) || code.startsWith('ERR_SSL')) return 'connection-lost';
  if (DEAD_CONNECTION_MESSAGES.some((text) => e.message.startsWith(text))) return e.message.includes('support SSL') ? 'tls' : 'connection-lost';
  // pg.Pool's own acquire timeout, for apps that classify errors from both pools.
  if (e.message.startsWith('timeout exceeded when trying to connect')) return 'unreachable';
  return 'unknown';
}

// pg-lifeline's own errors, as they come back out of a checked-out client: what they wrap says more.
function classifyOwn(code: string, cause: unknown): FailureKind {
  if (code === 'PGL_CONNECTION_LOST' || code === 'PGL_OUTCOME_UNKNOWN') {
    const inner = classifyFailure(cause);
    return CONNECTION_ENDING.has(inner) ? inner : 'connection-lost';
  }
  if (code === 'PGL_QUERY_TIMEOUT') return 'query-timeout';
  return code === 'PGL_NO_MATCHING_HOST' || code === 'PGL_HOSTS_UNREACHABLE' ? 'unreachable' : 'unknown';
}

const CONNECTION_ENDING: ReadonlySet<FailureKind> = new Set(['connection-lost', 'idle-session-ended', 'server-starting', 'too-many-connections', 'unreachable', 'query-timeout']);

/** True when `err` means the connection it happened on can no longer be used. */
export function isConnectionError(err: unknown): boolean {
  return CONNECTION_ENDING.has(classifyFailure(err));
}

/**
 * True when `err` suggests every connection to the server may be dead (shutdown, crash, reset,
 * the socket closing under us), rather than one session ending for its own reasons (an idle
 * timeout, a statement deadline). The pool then validates every older connection before reuse.
 */
export function isServerWideFailure(err: unknown): boolean {
  const kind = classifyFailure(err);
  return kind === 'connection-lost' || kind === 'server-starting' || kind === 'unreachable';
}

/**
 * True when opening a connection failed in a way retrying cannot fix: wrong credentials, no such
 * database or role, no permission to connect, or a TLS certificate that does not verify.
 */
export function isPermanentConnectError(err: unknown): boolean {
  if ((err as { lifelineCode?: unknown } | null)?.lifelineCode === 'PGL_CONNECT_FAILED') return true;
  const kind = classifyFailure(err);
  if (kind === 'auth' || kind === 'no-database' || kind === 'tls') return true;
  const state = sqlStateOf(err);
  if (state === '42501' || state === '0A000' || (err instanceof Error && err.message.startsWith('SASL:'))) return true;
  // PgBouncer reports its own login refusals as 08P01, a code it also uses for passing trouble.
  return state === '08P01' && err instanceof Error && PERMANENT_POOLER_MESSAGES.some((text) => err.message.startsWith(text));
}

const PERMANENT_POOLER_MESSAGES = ['no such database', 'no such user', 'unsupported startup parameter', 'password authentication failed', 'SASL authentication failed'];

/**
 * The outcome of a statement that failed with `err`. `sent` says whether its bytes were handed
 * to the socket; a failure before that leaves nothing in doubt.
 * - `not-applied`: it never reached the server, the server ended the session while idle (so it
 *   had not read the statement), or the server rolled back the transaction it failed in
 *   (serialization, deadlock, cancel, or an ordinary error). A CALL or a script holding COMMIT
 *   may have committed earlier transactions before that one.
 * - `unknown`: it reached the socket and the connection died before the answer: it may have run.
 */
export function outcomeOf(err: unknown, sent: boolean): Outcome {
  const known = (unwrap(err) as { outcome?: unknown } | null)?.outcome;
  if (known === 'unknown' || known === 'not-applied') return known;
  if (!sent || (err instanceof Error && NOT_SENT_MESSAGES.some((text) => err.message.startsWith(text)))) return 'not-applied';
  const kind = classifyFailure(err);
  return kind === 'connection-lost' || kind === 'query-timeout' || kind === 'unknown' ? 'unknown' : 'not-applied';
}

/** Failure kinds after which running the statement again, on another connection, may succeed. */
const TRANSIENT: ReadonlySet<FailureKind> = new Set(['connection-lost', 'idle-session-ended', 'server-starting', 'too-many-connections', 'unreachable', 'query-timeout', 'serialization', 'deadlock']);

/** What the pool knows about a failed statement when it decides whether to run it again. */
export interface RetryFacts {
  /** Its bytes were handed to the socket. */
  readonly sent: boolean;
  /** Running it twice is harmless. */
  readonly idempotent: boolean;
  /**
   * It ran as one transaction, so nothing of it can have committed before the error: one plain
   * statement (not CALL or DO) in autocommit, or work inside `pool.transaction`. Default false.
   */
  readonly atomic?: boolean | undefined;
}

const UNKNOWN_FACTS: RetryFacts = Object.freeze({ sent: true, idempotent: false });

// The server rolls back the transaction that failed; earlier transactions of the same work stay.
const ROLLED_BACK: ReadonlySet<FailureKind> = new Set(['serialization', 'deadlock']);

/**
 * Whether a statement that failed with `err` may be run again. Never after auth, unknown-database
 * or ordinary SQL errors. After a serialization failure or deadlock only when it ran as one
 * transaction (`atomic`): a CALL or a script may have committed part of its work first. After
 * any other transient failure: always if it was not applied, and if the outcome is unknown only
 * when the statement is idempotent (running it twice is harmless). Without `options`, it assumes
 * the worst an app's own catch block can know: sent, not idempotent, not atomic.
 */
export function isSafeToRetry(err: unknown, options: RetryFacts = UNKNOWN_FACTS): boolean {
  if (!isTransientFailure(err)) return false;
  if (ROLLED_BACK.has(classifyFailure(err))) return options.atomic === true;
  return options.idempotent || outcomeOf(err, options.sent) === 'not-applied';
}

/** True when the failure is of a kind that a fresh try, on another connection, may get past. */
export function isTransientFailure(err: unknown): boolean {
  return TRANSIENT.has(classifyFailure(err));
}
