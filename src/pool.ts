import { EventEmitter } from 'node:events';
import * as pg from 'pg';
import { resolveConfig, type ClientConstructor, type PoolOptions, type ResolvedConfig, type ResolvedPoolOptions } from './config.js';
import { AbortedError, PoolEndedError } from './errors.js';
import { isConnectionError } from './postgres/classify.js';
import { Lease } from './postgres/lease.js';
import { leavesStaleSession } from './postgres/session-state.js';
import { ranAsOneTransaction } from './postgres/statement-shape.js';
import { ConnectionManager } from './postgres/manager.js';
import type { Attempt } from './postgres/retrier.js';
import { now } from './core/resource-pool.js';
import { attemptTransaction, beginStatement, deadlineIn, type TransactionHost, type TransactionOptions } from './postgres/transaction.js';
import type { PoolStats } from './stats.js';
import { ListenSession } from './postgres/listen-session.js';
import { Listener, type ListenOptions, type NotificationHandler } from './postgres/listener.js';

/** The client `connect()` hands out: a pg client that `await using` releases at the end of its block. */
export type LeasedClient = pg.PoolClient & AsyncDisposable;

/**
 * pg-lifeline's additions to a `pool.query` config object (`{ text, values, ... }`). pg ignores
 * them; everything else in the object keeps pg's meaning.
 */
export interface StatementOptions {
  /**
   * Running the statement twice is harmless (a read, an upsert), so it is retried even after a
   * connection loss that left its outcome unknown. Default: the pool's `idempotent` option.
   */
  readonly idempotent?: boolean | undefined;
  /**
   * Run a write so that its outcome is never in doubt: inside a transaction whose id is learned
   * before COMMIT, so a connection lost during COMMIT is resolved by asking the server. Costs
   * three extra round trips. Default false.
   */
  readonly resolveOutcome?: boolean | undefined;
  /** Stop waiting for a connection, or between retries, when this signal aborts. */
  readonly signal?: AbortSignal | undefined;
}

/** Options of methods that wait for a connection. */
export interface AcquireOptions {
  /** Stop waiting when this signal aborts; the call rejects with `AbortedError`. */
  readonly signal?: AbortSignal | undefined;
}

type ConnectCallback = (err: Error | undefined, client: LeasedClient | undefined, done: (release?: Error | boolean) => void) => void;
type QueryCallback = (err: Error | undefined, result?: pg.QueryResult) => void;
type Submittable = pg.Submittable & EventEmitter & { handleError?(error: unknown): void };

// pg.Pool typed as a bare EventEmitter: pg-lifeline replaces its whole surface, and TypeScript
// would otherwise reject getters that replace properties @types/pg declares.
const PgPool = pg.Pool as unknown as new () => EventEmitter;

const noop = (): void => undefined;

/**
 * A drop-in replacement for `pg.Pool` (a subclass of it) that never hands out a dead
 * connection, never crashes the process on a connection's death, and explains its failures.
 */
export class Pool extends PgPool {
  /** The options in force, with defaults filled in. Frozen. */
  readonly options: Readonly<ResolvedPoolOptions>;
  /** The client class connections are opened with. */
  readonly Client: ClientConstructor;
  /** True once `end()` has been called. */
  ending = false;
  /** True once `end()` has finished. */
  ended = false;
  /** The promise class async methods return, as pg.Pool: the `Promise` option, else the global one. */
  readonly Promise: PromiseConstructorLike;
  /** pg.Pool's debug logger: the `log` option, else a no-op. */
  readonly log: (...messages: unknown[]) => void;
  readonly #config: ResolvedConfig;
  readonly #manager: ConnectionManager;
  #listen: ListenSession | undefined;
  #listeners = 0;

  constructor(options?: PoolOptions | null) {
    const config = resolveConfig(options);
    super();
    this.#config = config;
    this.options = config.clientOptions;
    this.Client = config.Client ?? pg.Client;
    this.Promise = config.Promise ?? Promise;
    this.log = config.log ?? noop;
    this.#manager = new ConnectionManager(config, this);
    this.#manager.onOpened = (startedAt, recovered) => this.#listen?.serverAnswered(startedAt, recovered);
  }

  /** Open connections plus those being opened. */
  get totalCount(): number {
    return this.#manager.core.size;
  }
  /** Connections waiting in the pool. */
  get idleCount(): number {
    return this.#manager.core.idleCount;
  }
  /** Callers waiting for a connection. */
  get waitingCount(): number {
    return this.#manager.core.waitingCount;
  }
  /** Checked-out connections past their lifetime, to be closed when released. */
  get expiredCount(): number {
    return this.#manager.expiredCount();
  }

  /** A snapshot of sizes and counters. */
  stats(): PoolStats {
    return { ...this.#manager.snapshot(), listen: this.#listen?.stats(this.#listeners) };
  }

  /**
   * Listens to `channel` on the pool's dedicated LISTEN session (opened on first use, not counted
   * against `max`, shared by every listener) and resolves once LISTEN has succeeded. The session is
   * proven with a heartbeat and reopened with backoff whenever it is lost, for as long as anyone
   * listens; every window in which notifications may have been lost is reported.
   */
  async listen(channel: string, handler: NotificationHandler, options?: ListenOptions): Promise<Listener> {
    if (this.ending) throw new PoolEndedError();
    const session = (this.#listen ??= new ListenSession(this.#config, {
      diagnose: (error, connection) => this.#manager.diagnose(error, connection),
      warn: (message, fields) => this.#manager.warn(message, fields),
    }));
    const listener = new Listener(session, options, (message, fields) => this.#manager.warn(message, fields));
    this.#listeners++;
    listener.once('close', () => this.#listeners--);
    try {
      await listener.add(channel, handler, { signal: options?.signal });
    } catch (error) {
      await listener.close();
      throw error;
    }
    const signal = options?.signal;
    if (signal !== undefined) {
      // Aborting later closes the listener; closing first must not leave the handler on a long-lived signal.
      const onAbort = (): void => void listener.close();
      signal.addEventListener('abort', onAbort, { once: true });
      listener.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    return listener;
  }

  /**
   * Checks out a client; call `client.release()` exactly once when done (or use `await using`).
   * Rejects with `AcquireTimeoutError` after `connectionTimeoutMillis`.
   */
  connect(options?: AcquireOptions): Promise<LeasedClient>;
  connect(callback: ConnectCallback): void;
  connect(arg?: AcquireOptions | ConnectCallback): Promise<LeasedClient> | void {
    if (typeof arg === 'function') {
      this.#lease(undefined).then(
        (lease) => arg(undefined, lease.client, lease.client.release),
        (error: Error) => arg(error, undefined, noop),
      );
      return;
    }
    // The common case, an idle connection ready to go, skips the async machinery entirely.
    const t = now();
    const ready = this.ending || arg?.signal !== undefined ? undefined : this.#manager.tryCheckout(t);
    if (ready !== undefined) return this.#promise(Promise.resolve(new Lease(ready, this.#manager).client));
    if (this.ending || arg?.signal?.aborted) return this.#promise(this.#lease(arg?.signal).then((lease) => lease.client));
    return this.#promise(this.#manager.checkout(this.#deadline(t), arg?.signal, t, (connection) => new Lease(connection, this.#manager).client));
  }

  /**
   * Runs one statement on a pooled connection, exactly like `pg.Pool#query`. Unlike pg.Pool, an
   * ordinary SQL error does not cost the connection; only a dead one is discarded.
   */
  query<T extends pg.Submittable>(queryStream: T): T;
  query<R extends unknown[] = unknown[], I = unknown[]>(queryConfig: pg.QueryArrayConfig<I> & StatementOptions, values?: pg.QueryConfigValues<I>): Promise<pg.QueryArrayResult<R>>;
  query<R extends pg.QueryResultRow = pg.QueryResultRow, I = unknown[]>(queryConfig: pg.QueryConfig<I> & StatementOptions): Promise<pg.QueryResult<R>>;
  query<R extends pg.QueryResultRow = pg.QueryResultRow, I = unknown[]>(queryTextOrConfig: string | (pg.QueryConfig<I> & StatementOptions), values?: pg.QueryConfigValues<I>): Promise<pg.QueryResult<R>>;
  query<R extends unknown[] = unknown[], I = unknown[]>(queryConfig: pg.QueryArrayConfig<I> & StatementOptions, callback: (err: Error, result: pg.QueryArrayResult<R>) => void): void;
  query<R extends pg.QueryResultRow = pg.QueryResultRow, I = unknown[]>(queryTextOrConfig: string | (pg.QueryConfig<I> & StatementOptions), callback: (err: Error, result: pg.QueryResult<R>) => void): void;
  query<R extends pg.QueryResultRow = pg.QueryResultRow, I = unknown[]>(queryText: string, values: pg.QueryConfigValues<I>, callback: (err: Error, result: pg.QueryResult<R>) => void): void;
  query(text: unknown, values?: unknown, callback?: unknown): unknown {
    if (typeof text === 'function') {
      // As pg.Pool: the error goes to the callback only, so callback-style code sees no stray rejection.
      setImmediate(text as QueryCallback, new TypeError('Passing a function as the first parameter to pool.query is not supported'));
      return undefined;
    }
    if (typeof values === 'function') {
      callback = values;
      values = undefined;
    }
    if (typeof (text as { submit?: unknown } | null)?.submit === 'function') return this.#submit(text as Submittable);
    const result = this.#run(text, values);
    if (typeof callback === 'function') {
      const cb = callback as QueryCallback;
      result.then((r) => cb(undefined, r), (error: Error) => cb(error));
      return undefined;
    }
    return this.#promise(result);
  }

  /** Runs `fn` with a checked-out client and always releases it, even if `fn` throws. */
  async withClient<T>(fn: (client: LeasedClient) => Promise<T> | T, options?: AcquireOptions): Promise<T> {
    const lease = await this.#lease(options?.signal);
    let failure: unknown;
    try {
      return await fn(lease.client);
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      // A connection that died under fn is discarded; anything else goes back (rolled back if dirty).
      if (!lease.released) lease.release(isConnectionError(failure) ? failure : undefined);
    }
  }

  /**
   * Runs `fn` in a transaction: BEGIN, then COMMIT if it resolves or ROLLBACK if it throws; the
   * client is always released. If the connection dies during COMMIT, the pool finds out whether
   * it committed (see `resolveCommitOutcome`). With `retry`, a transaction that certainly did not
   * commit runs again on a fresh connection.
   */
  async transaction<T>(fn: (client: LeasedClient) => Promise<T> | T, options?: TransactionOptions): Promise<T> {
    const begin = beginStatement(options);
    const retry = options?.retry ?? false;
    // A READ ONLY transaction cannot write, so there is no outcome to track.
    const settings = { track: this.#config.resolveCommitOutcome && options?.readOnly !== true, retry: retry !== false, signal: options?.signal };
    const once = (): Promise<Attempt<T>> => attemptTransaction(this.#transactions, begin, fn as (client: pg.PoolClient) => Promise<T> | T, settings);
    this.#manager.retrier.earn();
    const first = await once();
    if (first.ok) return first.value;
    return this.#manager.retrier.retry(first, once, options?.signal, typeof retry === 'number' ? retry : undefined);
  }

  /**
   * Stops new checkouts, waits up to `shutdownTimeoutMillis` for checked-out clients, then closes
   * every connection and cancels every timer. Never hangs on a dead network.
   */
  end(): Promise<void>;
  end(callback: (err?: Error) => void): void;
  end(callback?: (err?: Error) => void): Promise<void> | void {
    let result: Promise<void>;
    if (this.ending) {
      result = Promise.reject(new PoolEndedError('Called end on pool more than once.'));
    } else {
      this.ending = true;
      result = Promise.all([this.#manager.end(), this.#listen?.end()]).then(() => {
        this.ended = true;
      });
    }
    if (callback === undefined) return this.#promise(result);
    result.then(() => callback(), callback);
  }

  // What pool.transaction needs from the pool, bound once.
  readonly #transactions: TransactionHost = {
    lease: (signal) => this.#lease(signal),
    resolverQuery: (sql, values, deadline) => this.#manager.resolverQuery(sql, values, deadline),
    resolveDeadline: () => deadlineIn(this.#config.connectionTimeoutMillis),
    resolved: (resolution) => this.#manager.resolved(resolution),
    retryable: (error) => this.#manager.retryableTransaction(error),
  };

  async #lease(signal: AbortSignal | undefined): Promise<Lease> {
    if (this.ending) throw new PoolEndedError();
    if (signal?.aborted) throw new AbortedError('Waiting for a connection', signal.reason);
    const t = now();
    const ready = this.#manager.tryCheckout(t);
    if (ready !== undefined) return new Lease(ready, this.#manager);
    return this.#manager.checkout(this.#deadline(t), signal, t, (connection) => new Lease(connection, this.#manager));
  }

  async #run(text: unknown, values: unknown): Promise<pg.QueryResult> {
    if (this.ending) throw new PoolEndedError();
    const options = typeof text === 'object' && text !== null ? (text as StatementOptions) : undefined;
    if (options?.resolveOutcome === true) {
      return this.transaction((client) => client.query(text as pg.QueryConfig, values as unknown[] | undefined), { retry: true, signal: options.signal });
    }
    const idempotent = options?.idempotent ?? this.#config.idempotent;
    const retrier = this.#manager.retrier;
    retrier.earn();
    // The first try runs inline; retries are the slow path.
    const first = await this.#attempt(text, values, idempotent, options?.signal);
    if (first.ok) return first.value;
    return retrier.retry(first, () => this.#attempt(text, values, idempotent, options?.signal), options?.signal);
  }

  async #attempt(text: unknown, values: unknown, idempotent: boolean, signal: AbortSignal | undefined): Promise<Attempt<pg.QueryResult>> {
    const manager = this.#manager;
    const t = now();
    const connection = manager.tryCheckout(t) ?? (await manager.checkout(this.#deadline(t), signal, t, (ready) => ready));
    try {
      const value = await connection.client.query(text as string, values as unknown[] | undefined);
      // pg.Pool releases with the query callback's error argument, which is null on success.
      manager.checkin(connection, null);
      return { ok: true, value };
    } catch (error) {
      // Translate first: a timed-out statement's cancel must be on its way before the close.
      const timeout = (text as { query_timeout?: number } | null)?.query_timeout;
      const translated = manager.translate(error, connection, true, timeout);
      manager.checkin(connection, isConnectionError(error) || leavesStaleSession(error, text, values) ? error : undefined);
      // Whether it ran as one transaction matters only after 40001/40P01; reading the SQL is for failures only.
      return { ok: false, error: translated, retry: manager.retryable(error, { sent: true, idempotent, atomic: ranAsOneTransaction(text, values) }) };
    }
  }

  // The client goes back once the submittable is done with it (older pg.Pool releases leaked it).
  #submit<T extends Submittable>(submittable: T): T {
    this.#lease(undefined).then(
      (lease) => {
        const done = (error?: unknown): void => {
          submittable.off('end', done).off('close', done).off('error', failed);
          lease.release(error);
        };
        // A statement error is followed by ReadyForQuery ('end'); only a dead connection is not.
        const failed = (error: unknown): void => {
          if (isConnectionError(error)) done(error);
        };
        submittable.once('end', done).once('close', done).on('error', failed);
        lease.client.query(submittable);
      },
      (error: unknown) => {
        if (typeof submittable.handleError === 'function') submittable.handleError(error);
        else submittable.emit('error', error);
      },
    );
    return submittable;
  }

  // `t`: the caller's clock reading, taken once per checkout.
  #deadline(t: number): number {
    const millis = this.#config.connectionTimeoutMillis;
    return millis === 0 ? Infinity : t + millis;
  }

  #promise<T>(promise: Promise<T>): Promise<T> {
    const Custom = this.#config.Promise;
    return Custom === undefined ? promise : (new Custom<T>((resolve, reject) => promise.then(resolve, reject)) as Promise<T>);
  }
}
