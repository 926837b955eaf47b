import { inspect, type InspectOptionsStylized } from 'node:util';
import type * as pg from 'pg';
import type { Logger } from './diagnostics/logger.js';
import { ConfigError } from './errors.js';
import { CredentialCache, type PasswordProvider } from './postgres/credentials.js';
import { maskConnectionString } from './postgres/conninfo.js';
import { resolveHosts, type HostSettings, type TargetSessionAttrs } from './postgres/hosts.js';

/** A pg client constructor, such as `pg.Client` or a subclass of it. */
export type ClientConstructor = new (config?: pg.ClientConfig) => pg.Client;

/**
 * Options of `new Pool(options)`: every pg.Pool and pg.Client option with pg's meaning,
 * plus pg-lifeline's own (documented below). Values are validated once; a bad one throws
 * {@link ConfigError}.
 */
export interface PoolOptions extends Omit<pg.PoolConfig, 'Client' | 'onConnect' | 'password'> {
  /**
   * The password, or a provider function called with `{ host, port, user, database }` of the
   * connection being opened, returning (or resolving to) a string or `{ password, expiresAt }`.
   * The result is cached per host until shortly before `expiresAt`, fetched once per host however
   * many connections open together, and fetched again once when the server refuses it.
   */
  password?: string | PasswordProvider | undefined;
  /** Old name of `max`, still accepted by pg.Pool. */
  poolSize?: number | undefined;
  /** Client class to open connections with. Default: the app's own `pg.Client`. */
  Client?: ClientConstructor | undefined;
  /** Runs on every new connection before its first use; a rejection discards it. */
  onConnect?: ((client: pg.ClientBase) => void | Promise<void>) | undefined;
  /**
   * A connection idle longer than this is checked with an empty query at checkout. Inside the
   * window it is handed out without a round trip. 0 checks every checkout. Default 1000.
   */
  validationWindowMillis?: number | undefined;
  /**
   * Longest one attempt to open a connection may take (TCP, TLS, authentication). Shorter than
   * the acquire deadline (`connectionTimeoutMillis`), so an attempt lost to a dead network leaves
   * time for another. Default: a third of `connectionTimeoutMillis`, kept within 1000 to 10000 (all of it when that is
   * under 1000; 10000 when it is 0).
   */
  connectAttemptTimeoutMillis?: number | undefined;
  /**
   * Longest a checkout probe, a keepalive ping, or the ROLLBACK of a session given back dirty may
   * take before the connection is discarded. Default 3000.
   */
  validationTimeoutMillis?: number | undefined;
  /**
   * Idle connections are pinged this often (minus up to 10 % jitter) so dead ones are found
   * before anyone needs them. 0 turns pings off. Default 60000.
   */
  keepaliveIntervalMillis?: number | undefined;
  /** Fraction (0 to 0.5) of `maxLifetimeSeconds` taken off at random per connection. Default 0.05. */
  maxLifetimeJitter?: number | undefined;
  /** How long `end()` waits for checked-out clients before closing them anyway. Default 10000. */
  shutdownTimeoutMillis?: number | undefined;
  /**
   * Record where each client was released, for {@link ClientReleasedError}. A stack capture costs
   * about as much as a whole checkout, so the default `'auto'` records nothing until the pool first
   * sees a client used after release (or released twice), then records from then on.
   */
  releaseTraces?: boolean | 'auto' | undefined;
  /**
   * Automatic retry of statements and transactions that are safe to repeat, or `false` for none.
   * Defaults: 5 attempts, backoff from 10 ms up to 1000 ms with full jitter, all within 30 s.
   */
  retry?: RetryOptions | false | undefined;
  /**
   * Treat every `pool.query` statement as safe to repeat (a read-only pool), so a connection loss
   * after it was sent is retried too. A statement's own `idempotent` flag wins. Default false.
   */
  idempotent?: boolean | undefined;
  /**
   * While the server is failing (the last connect attempt failed), fail checkouts at once with
   * `ServerUnavailableError` instead of waiting out `connectionTimeoutMillis`. Default false.
   */
  failFast?: boolean | undefined;
  /**
   * Find out whether a transaction committed when its connection dies during COMMIT (one extra
   * round trip per `pool.transaction`, to learn its transaction id first). Default true.
   */
  resolveCommitOutcome?: boolean | undefined;
  /**
   * Servers to try in order, instead of (or as well as) a multi-host `host` / `connectionString`.
   * The connection string forms `postgres://h1:5432,h2:5433/db` and `host=h1,h2 port=5432,5433` work too.
   */
  hosts?: readonly { readonly host: string; readonly port?: number | undefined }[] | undefined;
  /**
   * Which server role a connection must reach, as libpq's `target_session_attrs` (also read from the
   * connection string): any, read-write, read-only, primary, standby, prefer-standby, prefer-primary.
   * Default 'any'.
   */
  targetSessionAttrs?: TargetSessionAttrs | undefined;
  /** 'random' shuffles the hosts for each new connection, as libpq's `load_balance_hosts`. Default 'disable'. */
  loadBalanceHosts?: 'random' | 'disable' | undefined;
  /**
   * How often the LISTEN session of `pool.listen()` proves it is alive and still listening (minus up
   * to 10 % jitter). A dead network is noticed within this plus `validationTimeoutMillis`. Default 5000.
   */
  listenHeartbeatMillis?: number | undefined;
  /** A host that failed is tried last for this long (Npgsql's Host Recheck Seconds). Default 10000. */
  hostRecheckMillis?: number | undefined;
  /**
   * A statement in flight that has received no bytes for this long makes its host suspect: a
   * separate monitor connection then asks the server whether its backend is still working on it.
   * 0 turns monitoring off. Default 2000.
   */
  monitorGraceMillis?: number | undefined;
  /**
   * How long the monitor may fail to reach a suspect host before the host is declared unreachable
   * and its connections with a statement in flight are cut off. Default 10000.
   */
  monitorDetectionMillis?: number | undefined;
  /**
   * Where pg-lifeline reports what it does (a connection lost and why, a retry, an outage and its
   * end, a tuned keepalive, a config that conflicts with the server): a pino-, console- or
   * winston-shaped logger. Quiet when absent. Never given passwords or query values.
   */
  logger?: Logger | undefined;
}

/** Retry settings (the `retry` option). */
export interface RetryOptions {
  /** Most tries in all, the first included: 1 to 100. Default 5. */
  attempts?: number | undefined;
  /** First backoff step; each later one doubles, up to `maxDelayMillis`, with full jitter. Default 10. */
  baseDelayMillis?: number | undefined;
  maxDelayMillis?: number | undefined;
  /** No retry starts after this long since the first try. Default 30000. */
  deadlineMillis?: number | undefined;
  /**
   * Retry budget: each request earns this fraction of a retry, and retries beyond the earned
   * ones (plus `budgetBurst`) are refused, so a failing server is not hit by a retry storm.
   * Default 0.2.
   */
  budgetRatio?: number | undefined;
  /** Retries allowed in a burst before the budget applies. Default 20, or 4 × max if larger. */
  budgetBurst?: number | undefined;
}

/** The validated retry settings. */
export interface ResolvedRetry {
  readonly attempts: number;
  readonly baseDelayMillis: number;
  readonly maxDelayMillis: number;
  readonly deadlineMillis: number;
  readonly budgetRatio: number;
  readonly budgetBurst: number;
}

/** `pool.options`: what the pool was given, with every default filled in. */
export interface ResolvedPoolOptions extends Omit<PoolOptions, 'password'> {
  /** Typed as pg's, so the pool stays assignable to pg.Pool; a provider function is kept as given. */
  readonly password?: pg.PoolConfig['password'];
  readonly max: number;
  readonly min: number;
  /** 0: idle connections are never closed for idleness. */
  readonly idleTimeoutMillis: number;
  /** 0: wait forever (pg's meaning). */
  readonly connectionTimeoutMillis: number;
  readonly connectAttemptTimeoutMillis: number;
  readonly maxUses: number;
  /** 0: connections never retire for age. */
  readonly maxLifetimeSeconds: number;
  readonly maxLifetimeJitter: number;
  readonly allowExitOnIdle: boolean;
  readonly keepAlive: boolean;
  readonly keepAliveInitialDelayMillis: number;
  readonly validationWindowMillis: number;
  readonly validationTimeoutMillis: number;
  readonly keepaliveIntervalMillis: number;
  readonly shutdownTimeoutMillis: number;
  readonly releaseTraces: boolean | 'auto';
  readonly retry: ResolvedRetry | false;
  readonly idempotent: boolean;
  readonly failFast: boolean;
  readonly resolveCommitOutcome: boolean;
  /** pg's client-side statement deadline; 0 none. pg-lifeline also cancels and discards. */
  readonly query_timeout: number;
  readonly listenHeartbeatMillis: number;
}

type PoolSetting =
  | 'max'
  | 'min'
  | 'idleTimeoutMillis'
  | 'connectionTimeoutMillis'
  | 'connectAttemptTimeoutMillis'
  | 'maxUses'
  | 'maxLifetimeJitter'
  | 'allowExitOnIdle'
  | 'validationWindowMillis'
  | 'validationTimeoutMillis'
  | 'keepaliveIntervalMillis'
  | 'shutdownTimeoutMillis'
  | 'releaseTraces'
  | 'retry'
  | 'idempotent'
  | 'failFast'
  | 'resolveCommitOutcome'
  | 'query_timeout'
  | 'listenHeartbeatMillis';

/** The validated settings the pool runs on. Frozen. */
export interface ResolvedConfig extends Pick<ResolvedPoolOptions, PoolSetting> {
  /** `maxLifetimeSeconds` in milliseconds; 0: never. */
  readonly maxLifetimeMillis: number;
  readonly Client: ClientConstructor | undefined;
  readonly onConnect: PoolOptions['onConnect'];
  readonly verify: pg.PoolConfig['verify'];
  readonly log: ((...messages: unknown[]) => void) | undefined;
  readonly logger: Logger | undefined;
  readonly Promise: PromiseConstructorLike | undefined;
  /**
   * The password inside `connectionString`, else the `password` option (a string), kept here as a
   * plain field: the option is hidden from logging in `clientOptions`, where a spread would drop it.
   */
  readonly password: string | undefined;
  /** The password provider's cache, when `password` is a function. Stateful: one per pool. */
  readonly credentials: CredentialCache | undefined;
  /** What each new client is constructed with: the user's options plus pool-level defaults. */
  readonly clientOptions: Readonly<ResolvedPoolOptions>;
  /** The servers to try and the role they must have. */
  readonly hosts: HostSettings;
  readonly hostRecheckMillis: number;
  /** 0: no monitoring of in-flight statements. */
  readonly monitorGraceMillis: number;
  readonly monitorDetectionMillis: number;
}

const MAX_TIMER = 2_147_483_647;
const DEFAULT_CONNECTION_TIMEOUT = 30_000;
const DEFAULT_KEEPALIVE_INITIAL_DELAY = 30_000;

/**
 * Validates `options` once and returns the pool's frozen settings; `clientOptions` (pg's option
 * names with every default filled in) is what `pool.options` shows and what clients are built from.
 */
export function resolveConfig(options: PoolOptions | null | undefined): ResolvedConfig {
  if (options !== undefined && options !== null && typeof options !== 'object') {
    throw new ConfigError('options', 'an object', options);
  }
  const o: PoolOptions = options ?? {};
  if (o.max !== undefined && o.poolSize !== undefined && o.max !== o.poolSize) {
    throw new ConfigError('poolSize', 'to equal max when both are given (poolSize is an old name for max)', o.poolSize);
  }
  const max = int(o.max === undefined && o.poolSize !== undefined ? 'poolSize' : 'max', o.max ?? o.poolSize, 10, 1, 100_000);
  const min = int('min', o.min, 0, 0, max);
  const idleTimeoutMillis = o.idleTimeoutMillis === null ? 0 : int('idleTimeoutMillis', o.idleTimeoutMillis, 10_000, 0, MAX_TIMER);
  const connectionTimeoutMillis = int('connectionTimeoutMillis', o.connectionTimeoutMillis, DEFAULT_CONNECTION_TIMEOUT, 0, MAX_TIMER);
  // A third of the acquire deadline (at most 10 s), so an attempt lost to a dead network leaves room for two more.
  const connectAttemptTimeoutMillis = int('connectAttemptTimeoutMillis', o.connectAttemptTimeoutMillis, defaultAttemptMillis(connectionTimeoutMillis), 1, connectionTimeoutMillis || MAX_TIMER);
  const maxUses = o.maxUses === Infinity ? Infinity : int('maxUses', o.maxUses, Infinity, 1, Number.MAX_SAFE_INTEGER);
  const maxLifetimeSeconds = num('maxLifetimeSeconds', o.maxLifetimeSeconds, 1800, 0, MAX_TIMER / 1000);
  const keepAlive = bool('keepAlive', o.keepAlive, true);
  const keepAliveInitialDelayMillis = int('keepAliveInitialDelayMillis', o.keepAliveInitialDelayMillis, keepAlive ? DEFAULT_KEEPALIVE_INITIAL_DELAY : 0, 0, MAX_TIMER);

  const resolved = {
    max,
    min,
    idleTimeoutMillis,
    connectionTimeoutMillis,
    connectAttemptTimeoutMillis,
    maxUses,
    maxLifetimeSeconds,
    maxLifetimeJitter: num('maxLifetimeJitter', o.maxLifetimeJitter, 0.05, 0, 0.5),
    allowExitOnIdle: bool('allowExitOnIdle', o.allowExitOnIdle, false),
    keepAlive,
    keepAliveInitialDelayMillis,
    validationWindowMillis: int('validationWindowMillis', o.validationWindowMillis, 1000, 0, MAX_TIMER),
    validationTimeoutMillis: int('validationTimeoutMillis', o.validationTimeoutMillis, 3000, 1, MAX_TIMER),
    keepaliveIntervalMillis: int('keepaliveIntervalMillis', o.keepaliveIntervalMillis, 60_000, 0, MAX_TIMER),
    shutdownTimeoutMillis: int('shutdownTimeoutMillis', o.shutdownTimeoutMillis, 10_000, 0, MAX_TIMER),
    releaseTraces: o.releaseTraces === 'auto' ? ('auto' as const) : bool('releaseTraces', o.releaseTraces, 'auto'),
    retry: resolveRetry(o.retry, max),
    idempotent: bool('idempotent', o.idempotent, false),
    failFast: bool('failFast', o.failFast, false),
    resolveCommitOutcome: bool('resolveCommitOutcome', o.resolveCommitOutcome, true),
    query_timeout: int('query_timeout', o.query_timeout, 0, 0, MAX_TIMER),
    listenHeartbeatMillis: int('listenHeartbeatMillis', o.listenHeartbeatMillis, 5000, 100, MAX_TIMER),
  };
  // Read directly: in options copied from another pool (`new Pool(pool.options)`) it is not enumerable.
  const optionPassword = passwordOf(o.password);
  const clientOptions: Readonly<ResolvedPoolOptions> = Object.freeze(hideSecrets({ ...o, ...resolved }, optionPassword) as ResolvedPoolOptions);
  const hosts = resolveHosts(clientOptions as typeof clientOptions & Record<string, unknown>);
  // A password in the connection string wins, as any value the string gives wins over the options.
  const password = hosts.password ?? optionPassword;
  return Object.freeze({
    ...resolved,
    hosts,
    hostRecheckMillis: int('hostRecheckMillis', o.hostRecheckMillis, 10_000, 0, MAX_TIMER),
    monitorGraceMillis: int('monitorGraceMillis', o.monitorGraceMillis, 2000, 0, MAX_TIMER),
    monitorDetectionMillis: int('monitorDetectionMillis', o.monitorDetectionMillis, 10_000, 1000, MAX_TIMER),
    maxLifetimeMillis: maxLifetimeSeconds * 1000,
    Client: fn('Client', o.Client),
    onConnect: fn('onConnect', o.onConnect),
    verify: fn('verify', o.verify),
    log: fn('log', o.log),
    logger: loggerOf(o.logger),
    Promise: fn('Promise', o.Promise),
    password: typeof password === 'string' ? password : undefined,
    // Half the attempt bound, so a hung provider is reported as such and not as a connect timeout.
    credentials: typeof password === 'function' ? new CredentialCache(password, Math.max(1, Math.floor(connectAttemptTimeoutMillis / 2))) : undefined,
    clientOptions,
  });
}

function loggerOf(logger: unknown): Logger | undefined {
  if (logger === undefined) return undefined;
  const methods = ['debug', 'info', 'warn', 'error'] as const;
  if (typeof logger !== 'object' || logger === null || !methods.some((m) => typeof (logger as Logger)[m] === 'function')) {
    throw new ConfigError('logger', 'an object with debug, info, warn or error methods (pino, console, winston)', logger);
  }
  return logger as Logger;
}

function resolveRetry(retry: RetryOptions | false | undefined, max: number): ResolvedRetry | false {
  if (retry === false) return false;
  if (retry !== undefined && (typeof retry !== 'object' || retry === null)) throw new ConfigError('retry', 'an object or false', retry);
  const r = retry ?? {};
  const baseDelayMillis = int('retry.baseDelayMillis', r.baseDelayMillis, 10, 0, MAX_TIMER);
  return Object.freeze({
    attempts: int('retry.attempts', r.attempts, 5, 1, 100),
    baseDelayMillis,
    maxDelayMillis: int('retry.maxDelayMillis', r.maxDelayMillis, Math.max(1000, baseDelayMillis), baseDelayMillis, MAX_TIMER),
    deadlineMillis: int('retry.deadlineMillis', r.deadlineMillis, 30_000, 0, MAX_TIMER),
    budgetRatio: num('retry.budgetRatio', r.budgetRatio, 0.2, 0, 1),
    budgetBurst: int('retry.budgetBurst', r.budgetBurst, Math.max(20, 4 * max), 0, 1_000_000),
  });
}

// Like pg.Pool: `pool.options.password` and the TLS private key stay readable but do not show up
// when the options are logged. The pool itself uses ResolvedConfig.password, never this copy; pg
// reads `ssl.key` by name, so hiding it keeps client certificates working. Beyond pg, a password
// inside `connectionString` is masked when the options are inspected or turned into JSON, while
// reading `connectionString` (or spreading the options) still gives the real string.
function hideSecrets<T extends PoolOptions>(options: T, password: PoolOptions['password']): T {
  if (password !== undefined) Object.defineProperty(options, 'password', { enumerable: false, value: password });
  const ssl: unknown = options.ssl;
  if (typeof ssl === 'object' && ssl !== null && 'key' in ssl && ssl.key) Object.defineProperty(ssl, 'key', { enumerable: false });
  if (typeof options.connectionString === 'string') {
    const shown = (): Record<string, unknown> => ({ ...(options as Record<string, unknown>), connectionString: maskConnectionString(options.connectionString as string) });
    Object.defineProperty(options, 'toJSON', { enumerable: false, value: shown });
    Object.defineProperty(options, inspect.custom, {
      enumerable: false,
      value: (_depth: number, inspectOptions: InspectOptionsStylized, show: typeof inspect) => show(shown(), inspectOptions),
    });
  }
  return options;
}

/** A connect attempt's default bound: a third of `connectionTimeoutMillis`, within 1 to 10 s (10 s when that is 0, no limit). */
export function defaultAttemptMillis(connectionTimeoutMillis: number): number {
  return connectionTimeoutMillis === 0 ? 10_000 : Math.min(10_000, connectionTimeoutMillis, Math.max(1000, Math.round(connectionTimeoutMillis / 3)));
}

/** The `password` option as given: a string, a provider function, or nothing; anything else is a ConfigError. */
export function passwordOf(value: unknown): PoolOptions['password'] {
  if (value === undefined || value === null) return undefined;
  // Never echo the value: it is a secret.
  if (typeof value !== 'string' && typeof value !== 'function') throw new ConfigError('password', 'a string or a function returning one', `a ${typeof value}`);
  return value as PoolOptions['password'];
}

/** A whole-number option from `lo` to `hi`, `fallback` when not given; anything else is a ConfigError naming it. */
export function int(option: string, value: unknown, fallback: number, lo: number, hi: number): number {
  const n = num(option, value, fallback, lo, hi);
  if (!Number.isInteger(n) && n !== Infinity) {
    throw new ConfigError(option, `a whole number from ${lo} to ${hi}`, value);
  }
  return n;
}

function num(option: string, value: unknown, fallback: number, lo: number, hi: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < lo || value > hi) {
    throw new ConfigError(option, `a number from ${lo} to ${hi}`, value);
  }
  return value;
}

function bool<F extends boolean | 'auto'>(option: string, value: unknown, fallback: F): boolean | F {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new ConfigError(option, fallback === 'auto' ? "true, false or 'auto'" : 'true or false', value);
  return value;
}

function fn<T>(option: string, value: T): T {
  if (value !== undefined && typeof value !== 'function') throw new ConfigError(option, 'a function', value);
  return value;
}
