import type { Diagnosis } from './diagnostics/diagnose.js';
import { copyPgFields, errorText, leadWith, pgCodeOf, pgOrigin, sqlStateOf, unwrap, type PgErrorFields } from './pg-error.js';

export { sqlStateOf, unwrap } from './pg-error.js';

/**
 * Every error pg-lifeline raises itself. Each keeps pg's contract where pg.Pool would have
 * rejected too: `code` is pg's (the SQLSTATE, errno or TLS code) whenever the error underneath
 * has one, the message begins with pg's own text, and the server's fields (`severity`, `detail`,
 * `constraint`...) are copied over. pg-lifeline's own classification is additive: `lifelineCode`,
 * the class, and the explanation and advice after pg's text. What it wraps stays in `cause`.
 */

/** Stable codes of pg-lifeline's own errors, as `lifelineCode` (and as `code` where pg has none). */
export type LifelineErrorCode =
  | 'PGL_CONFIG'
  | 'PGL_ACQUIRE_TIMEOUT'
  | 'PGL_ABORTED'
  | 'PGL_POOL_ENDED'
  | 'PGL_CONNECT_FAILED'
  | 'PGL_CONNECTION_LOST'
  | 'PGL_OUTCOME_UNKNOWN'
  | 'PGL_COMMIT_OUTCOME_UNKNOWN'
  | 'PGL_QUERY_TIMEOUT'
  | 'PGL_SERVER_UNAVAILABLE'
  | 'PGL_NO_MATCHING_HOST'
  | 'PGL_CLIENT_RELEASED'
  | 'PGL_DOUBLE_RELEASE'
  | 'PGL_TRANSACTION_ROLLED_BACK'
  | 'PGL_CREDENTIAL_PROVIDER'
  | 'PGL_LISTEN'
  | 'PGL_HOSTS_UNREACHABLE';

/** What an error wraps: its `cause`, and the error pg.Pool would have rejected with (`pg`), whose code, text and fields lead. */
interface Wrapped {
  readonly cause?: unknown;
  readonly pg?: unknown;
}

/**
 * Base class of every pg-lifeline error. Where pg's error lies underneath, the fields of pg's
 * DatabaseError (`severity`, `detail`, `constraint`...) and of a Node.js system error (`errno`,
 * `syscall`, `address`, `port`) are copied onto it.
 */
export abstract class LifelineError extends Error {
  /** pg's code (SQLSTATE, errno or TLS code) when pg's error underneath has one; else `lifelineCode`. */
  readonly code: string;
  /** pg-lifeline's stable, documented identifier of the failure. */
  readonly lifelineCode: LifelineErrorCode;

  constructor(lifelineCode: LifelineErrorCode, message: string, wrapped: Wrapped = {}) {
    const pgError = pgOrigin(wrapped.pg);
    super(pgError === undefined ? message : leadWith(pgError.message, message), wrapped.cause !== undefined ? { cause: wrapped.cause } : undefined);
    this.name = new.target.name;
    this.code = pgCodeOf(pgError) ?? lifelineCode;
    this.lifelineCode = lifelineCode;
    copyPgFields(this, pgError);
  }
}

// The fields copied from pg's error, declared for readers such as `err.constraint`.
export interface LifelineError extends PgErrorFields {}

/** An option was of the wrong type or out of range. Thrown by `new Pool()` and by methods given bad options. */
export class ConfigError extends LifelineError {
  /** The option at fault, as the user spelled it. */
  readonly option: string;

  constructor(option: string, expected: string, received: unknown) {
    super('PGL_CONFIG', `Invalid option \`${option}\`: expected ${expected}, got ${describe(received)}.`);
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

// pg.Pool's message for the same failure, which apps match with /timeout/.
const PG_ACQUIRE_TIMEOUT = 'timeout exceeded when trying to connect';

/**
 * No connection could be handed out before the acquire deadline (`connectionTimeoutMillis`).
 * `reason` tells the two cases apart: every connection stayed checked out (`exhausted`), or
 * new connections could not be opened (`unreachable`, with the last connect error as `cause`).
 * The message begins as pg.Pool's ("timeout exceeded when trying to connect"), except when the last
 * connect error carries a code (ECONNREFUSED, 57P03...): pg.Pool rejects at once with that error, so
 * its code and message lead, and pg.Pool's timeout text follows.
 */
export class AcquireTimeoutError extends LifelineError {
  readonly reason: AcquireTimeoutReason;
  readonly waitedMillis: number;
  readonly counts: PoolCounts;

  /**
   * `lastConnectError` is the last failed open since the last successful one (undefined if none);
   * a pool with opens still pending and none failed counts as unreachable too.
   */
  constructor(waitedMillis: number, counts: PoolCounts, lastConnectError: unknown) {
    const unreachable = lastConnectError !== undefined || counts.opening > 0;
    const pg = pgCodeOf(pgOrigin(lastConnectError)) === undefined ? undefined : lastConnectError;
    const why = lastConnectError !== undefined ? `last connect error: ${errorText(lastConnectError)}` : `${counts.opening} connect attempt(s) still unanswered`;
    const message = unreachable
      ? `${PG_ACQUIRE_TIMEOUT} within ${waitedMillis} ms: the server could not be reached` +
        `${pg === undefined ? ` (${why})` : ''}. Check that PostgreSQL is running and reachable at the configured host and port, ` +
        `or raise connectionTimeoutMillis to ride out restarts.`
      : `${PG_ACQUIRE_TIMEOUT} within ${waitedMillis} ms: the pool is exhausted ` +
        `(${counts.total}/${counts.max} open, ${counts.idle} idle, ${counts.waiting} waiting). ` +
        `Release clients promptly (pool.withClient releases for you), raise max, or raise connectionTimeoutMillis.`;
    super('PGL_ACQUIRE_TIMEOUT', message, { cause: lastConnectError, pg });
    this.reason = unreachable ? 'unreachable' : 'exhausted';
    this.waitedMillis = waitedMillis;
    this.counts = counts;
  }
}

/** The caller's AbortSignal fired while it waited. The signal's reason is the `cause`. */
export class AbortedError extends LifelineError {
  constructor(what: string, reason: unknown) {
    super('PGL_ABORTED', `${what} was aborted by its AbortSignal.`, { cause: reason });
  }
}

/** The pool was used after `end()` was called, or `end()` was called twice. Both messages begin as pg.Pool's. */
export class PoolEndedError extends LifelineError {
  constructor(message = 'Cannot use a pool after calling end on the pool. Create a new Pool, or stop using this one before end().') {
    super('PGL_POOL_ENDED', message);
  }
}

/**
 * Opening a connection failed in a way that retrying will not fix: bad credentials, an unknown
 * database, a rejected TLS setting. pg's error is the `cause`; its code and message lead. (An
 * `onConnect` or `verify` hook that throws rejects with the app's own error, not this.)
 */
export class ConnectFailedError extends LifelineError {
  /** The server's SQLSTATE, when the server refused the connection. */
  readonly sqlState: string | undefined;

  constructor(cause: unknown, hint: string) {
    super('PGL_CONNECT_FAILED', `Could not open a connection${pgOrigin(cause) === undefined ? `: ${errorText(cause)}` : ''}. ${hint}`, { cause, pg: cause });
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

/** Whether a failed statement certainly did not take effect (`not-applied`), or may have (`unknown`). */
export type Outcome = 'not-applied' | 'unknown';

/**
 * The connection under a statement died and the statement certainly did not take effect: it
 * never reached the server, the server ended the idle session first, or the server rolled it
 * back. The pool has already removed the connection; running the work again is safe.
 * `cause` is the failure that killed the connection; `surfaced`, the error the statement itself
 * got from pg (what pg.Pool would reject with), lends its code, message and fields.
 */
export class ConnectionLostError extends LifelineError implements ConnectionFacts {
  readonly outcome: Outcome = 'not-applied';
  readonly sqlState: string | undefined;
  readonly ageMillis: number;
  readonly idleMillis: number;
  /** Why the connection was lost (`diagnosis.cause`), with the facts behind it and what to do. */
  readonly diagnosis: Diagnosis;

  constructor(cause: unknown, diagnosis: Diagnosis, outcome = 'It did not take effect; running it again is safe.', surfaced: unknown = cause) {
    const shown = pgOrigin(surfaced);
    const why = shown === undefined || pgOrigin(cause) !== shown ? ` (${errorText(cause)})` : '';
    super(lostCode(new.target), `Connection lost: ${diagnosis.summary}${why}. ${outcome} To avoid it: ${diagnosis.advice}.`, { cause, pg: surfaced });
    this.sqlState = sqlStateOf(cause);
    this.ageMillis = diagnosis.ageMillis;
    this.idleMillis = diagnosis.idleMillis;
    this.diagnosis = diagnosis;
  }
}

/**
 * The connection died after the statement was sent and before its answer: it may or may not have
 * committed. The pool does not repeat such a statement unless it is marked `idempotent`. To never
 * end here for a write, run it with `resolveOutcome: true` (or in `pool.transaction`), which finds
 * out whether it committed.
 */
export class OutcomeUnknownError extends ConnectionLostError {
  override readonly outcome: Outcome = 'unknown';

  constructor(cause: unknown, diagnosis: Diagnosis, surfaced: unknown = cause) {
    super(
      cause,
      diagnosis,
      'The statement had been sent, so it may or may not have taken effect: check before repeating it, ' +
        'mark it idempotent if repeating is harmless, or run it with resolveOutcome: true.',
      surfaced,
    );
  }
}

// The one subclass with a code of its own; a class of the app's below either keeps its parent's.
function lostCode(target: { readonly prototype: object }): LifelineErrorCode {
  return target === OutcomeUnknownError || target.prototype instanceof OutcomeUnknownError ? 'PGL_OUTCOME_UNKNOWN' : 'PGL_CONNECTION_LOST';
}

/**
 * A statement outlived its deadline (`query_timeout`). The pool sent a cancel request and
 * discarded the connection, since on a dead network it would never answer. Having been sent,
 * the statement may have taken effect. The message begins as pg's: "Query read timeout".
 */
export class QueryTimeoutError extends LifelineError {
  readonly outcome: Outcome = 'unknown';
  readonly timeoutMillis: number;
  /** The connection's age, idle time, host and server settings when the deadline passed. */
  readonly diagnosis: Diagnosis;

  constructor(timeoutMillis: number, diagnosis: Diagnosis) {
    super(
      'PGL_QUERY_TIMEOUT',
      `Query read timeout. The statement did not complete within query_timeout (${timeoutMillis} ms): either it is slow or the ` +
        `network to the server is dead. A cancel request was sent and the connection discarded. It may have ` +
        `taken effect. Raise query_timeout for slow statements; use statement_timeout to bound them on the server.`,
    );
    this.timeoutMillis = timeoutMillis;
    this.diagnosis = diagnosis;
  }
}

/**
 * The connection died during COMMIT and the pool could not find out whether the transaction
 * committed: the server stayed unreachable, or it is no longer the same server (a failover), so
 * the transaction id cannot be looked up. `xid` identifies the transaction on the old server.
 * `failed` is the error COMMIT itself got (what pg.Pool would reject with): its code and message lead.
 */
export class CommitOutcomeUnknownError extends LifelineError {
  readonly outcome: Outcome = 'unknown';
  /** The transaction id, when it was learned before COMMIT. */
  readonly xid: string | undefined;

  constructor(xid: string | undefined, why: string, cause: unknown, failed: unknown = cause) {
    super(
      'PGL_COMMIT_OUTCOME_UNKNOWN',
      `The connection died during COMMIT${xid === undefined ? '' : ` of transaction ${xid}`}, and whether it ` +
        `committed could not be determined: ${why}. Check for its effects before repeating it` +
        (xid === undefined ? '.' : `; pg_xact_status('${xid}') answers on the original server.`),
      { cause, pg: failed },
    );
    this.xid = xid;
  }
}

/**
 * With `failFast`, the server was failing when a connection was asked for, so the call failed at
 * once with the last connect error (`cause`) instead of waiting out `connectionTimeoutMillis`, as
 * pg.Pool does: that error's code and message lead.
 */
export class ServerUnavailableError extends LifelineError {
  constructor(cause: unknown) {
    super(
      'PGL_SERVER_UNAVAILABLE',
      `The server is unavailable${pgOrigin(cause) === undefined ? ` (last connect error: ${errorText(cause)})` : ''}. Failing at once because failFast is ` +
        `set; the pool keeps probing in the background and serves requests again as soon as it answers.`,
      { cause, pg: cause },
    );
  }
}

/**
 * Every host answered, but none had the role `target_session_attrs` asks for (no primary during
 * a failover, say). The pool keeps trying until the acquire deadline, since a promotion may be
 * moments away.
 */
export class NoMatchingHostError extends LifelineError {
  readonly targetSessionAttrs: string;

  constructor(targetSessionAttrs: string, hosts: readonly { readonly key: string }[]) {
    super(
      'PGL_NO_MATCHING_HOST',
      `No server matched target_session_attrs=${targetSessionAttrs} among ${hosts.map((h) => h.key).join(', ')}. ` +
        `During a failover this passes once a standby is promoted; otherwise check the host list and the servers' roles.`,
    );
    this.targetSessionAttrs = targetSessionAttrs;
  }
}

/**
 * True when `err` leaves it unknown whether the work took effect: check before repeating it.
 * Every other pg-lifeline failure of a statement means it did not take effect.
 */
export function isOutcomeUnknown(err: unknown): boolean {
  const inner = unwrap(err);
  if (inner instanceof LifelineError) return (inner as { outcome?: unknown }).outcome === 'unknown';
  // Errors rebuilt from ours by other libraries keep `lifelineCode` or, where pg had no code, `code`.
  const e = inner as { code?: unknown; lifelineCode?: unknown } | null | undefined;
  const code = e?.lifelineCode ?? e?.code;
  return code === 'PGL_OUTCOME_UNKNOWN' || code === 'PGL_COMMIT_OUTCOME_UNKNOWN';
}

const TRACE_HINT =
  ' Where it was released was not recorded: with releaseTraces left at its default, the pool starts ' +
  'recording release sites after this first misuse, so the next one will say; or set releaseTraces: true.';

/**
 * A client was used after it went back to the pool: it may belong to other work by now.
 * `releasedAt` is the stack of the `release()` call, when release traces are on.
 */
export class ClientReleasedError extends LifelineError {
  readonly releasedAt: string | undefined;

  constructor(operation: string, releasedAt: string | undefined) {
    super(
      'PGL_CLIENT_RELEASED',
      `Cannot call ${operation}() on a client that was already released to the pool. ` +
        `Keep every use of a client between pool.connect() and its release() ` +
        `(pool.withClient does this for you), and do not share one client across concurrent work.` +
        (releasedAt === undefined ? TRACE_HINT : `\nReleased at:\n${releasedAt}`),
    );
    this.releasedAt = releasedAt;
  }
}

/** `release()` was called a second time on the same checkout. The message begins as pg.Pool's. */
export class DoubleReleaseError extends LifelineError {
  readonly releasedAt: string | undefined;

  constructor(releasedAt: string | undefined) {
    super(
      'PGL_DOUBLE_RELEASE',
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
  constructor() {
    super(
      'PGL_TRANSACTION_ROLLED_BACK',
      'The transaction was rolled back instead of committed: a statement inside it failed earlier. ' +
        'Nothing it wrote was saved. Let errors inside the transaction propagate, or use a SAVEPOINT to recover from one.',
    );
  }
}

/**
 * A LISTEN could not start or keep going: the server refused the channel (a standby, too many
 * listeners), a pooler in transaction mode dropped it, or the session could not be opened. The
 * server's error, when there is one, is the `cause`.
 */
export class ListenError extends LifelineError {
  constructor(message: string, cause: unknown) {
    super('PGL_LISTEN', message, { cause });
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

/**
 * The `password` provider function threw, timed out, or returned something other than a string or
 * `{ password, expiresAt }`, so the connection could not be opened. `provider` is its name.
 */
export class CredentialProviderError extends LifelineError {
  /** The provider function's name ('password' when it has none). */
  readonly provider: string;

  constructor(provider: string, cause: unknown) {
    super(
      'PGL_CREDENTIAL_PROVIDER',
      `The password provider \`${provider}\` failed: ${typeof cause === 'string' ? cause : errorText(cause)}. ` +
        'Check that it can reach its token service (IAM, Entra ID, the secret store) and that its own credentials are valid.',
      typeof cause === 'string' ? {} : { cause },
    );
    this.provider = provider;
  }
}
