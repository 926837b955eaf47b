import type { ResolvedConfig } from '../config.js';
import { ResourcePool, now, type ResourceHooks, type ResourceState } from '../core/resource-pool.js';
import { ConnectionLostError, LifelineError, OutcomeUnknownError, QueryTimeoutError, ServerUnavailableError, sqlStateOf } from '../errors.js';
import { StatsRecorder, type EvictionReason, type PoolStats } from '../stats.js';
import { classifyFailure, isConnectionError, isSafeToRetry, isServerWideFailure, isTransientFailure, outcomeOf, type RetryFacts } from './classify.js';
import { HostRouter } from './host-router.js';
import type { CommitResolution, ResolverQuery } from './commit-resolver.js';
import { PgConnection, type ConnectionOwner } from './connection.js';
import { hasQueryInFlight, isClientFinished, onReadyForQuery, setSocketRef } from './internals.js';
import { checkin } from './checkin.js';
import type { LeaseOwner } from './lease.js';
import { diagnose, type Diagnosis } from '../diagnostics/diagnose.js';
import { readServerSettings } from '../diagnostics/server-settings.js';
import { ServerKnowledge, type TuningReporter } from './tuning.js';
import { Reporter, type PoolEvents } from './reporter.js';
import { Maintenance } from './maintenance.js';
import { MonitorHooks } from './monitor-hooks.js';
import { OPEN_RETRY_BASE_MILLIS, fatalOpenError, isFatalOpenError, openRetryCapMillis } from './open-policy.js';
import { Retrier, type RetryEvent, type RetryObserver } from './retrier.js';

/**
 * PostgreSQL policy over the generic pool: which connections may be handed out (validation,
 * generations, lifetimes), what happens to one given back (rollback, destroy), and how deaths are
 * reported. Everything here runs on records the pool owns; pg's client objects are not touched.
 */
export class ConnectionManager implements ResourceHooks<PgConnection>, ConnectionOwner, LeaseOwner, RetryObserver, TuningReporter {
  readonly core: ResourcePool<PgConnection>;
  readonly stats = new StatsRecorder();
  readonly retrier: Retrier;
  readonly #config: ResolvedConfig;
  readonly #report: Reporter;
  readonly #maintenance: Maintenance;
  readonly #closing = new Set<Promise<void>>();
  readonly #router: HostRouter;
  /** Server settings, learned proxy idle kills, and the keepalive interval tuned from them. */
  readonly knowledge: ServerKnowledge;
  /** Bumped by a server-wide failure: connections of older generations are checked before use. */
  #generation = 0;
  #releaseTraces: boolean;
  /** Called when a connection opens (begun at `startedAt`; `recovered` if it ended an outage): news for the LISTEN session. */
  onOpened: ((startedAt: number, recovered: boolean) => void) | undefined;

  constructor(config: ResolvedConfig, events: PoolEvents) {
    this.#config = config;
    this.#report = new Reporter(config, events, this.stats);
    this.#router = new HostRouter(config.hosts, config.hostRecheckMillis);
    this.knowledge = new ServerKnowledge(config, this);
    this.#releaseTraces = config.releaseTraces === true;
    this.core = new ResourcePool<PgConnection>(this, {
      max: config.max,
      min: config.min,
      retryBaseMillis: OPEN_RETRY_BASE_MILLIS,
      failFast: config.failFast,
    });
    this.retrier = new Retrier(config.retry, this);
    this.#maintenance = new Maintenance(this, config, new MonitorHooks(this.core, this.stats, this.#report, config));
    this.#maintenance.start();
    if (config.min > 0) this.core.warm();
  }

  get keepaliveMillis(): number {
    return this.knowledge.keepaliveMillis;
  }

  get idleTimeoutMillis(): number {
    return this.knowledge.idleTimeoutMillis;
  }

  get releaseTraces(): boolean {
    return this.#releaseTraces;
  }

  misused(): void {
    // A misuse usually repeats along the same code path; from now on, say where releases happen.
    if (this.#config.releaseTraces === 'auto') this.#releaseTraces = true;
  }

  // ---- checkout ----

  /**
   * A connection ready to use right now without any I/O, if the idle stack has one. `t` is the
   * caller's clock reading: under contention, reading the clock was a quarter of the CPU.
   */
  tryCheckout(t = now()): PgConnection | undefined {
    this.#maintenance.catchUp(t);
    const idle = this.core.idle();
    const top = idle[idle.length - 1];
    if (top === undefined || this.#needsCheck(top, t)) return undefined;
    this.core.takeIdle();
    return this.#leased(top, t, 0, false);
  }

  /**
   * Waits for a connection, validating suspect ones, until `deadline` or `signal`; `started` is
   * when the caller began. `wrap` turns the connection into what the caller hands out, in the same
   * step: on the contended path every promise hop costs as much as the pool's own work.
   */
  checkout<T>(deadline: number, signal: AbortSignal | undefined, started: number, wrap: (connection: PgConnection) => T): Promise<T> {
    if (this.core.idleCount > 0) return this.#checkoutChecked(deadline, signal, started, undefined).then(wrap);
    return this.core.acquire(deadline, signal, started).then((connection) => {
      // Handed over by a checkin, a keepalive or an open, each of which read the clock a moment ago.
      const t = Math.max(connection.idleSince, connection.checkedAt);
      if (this.#needsCheck(connection, t)) return this.#checkoutChecked(deadline, signal, started, connection).then(wrap);
      return wrap(this.#leased(connection, t, Math.max(0, t - started), false));
    });
  }

  async #checkoutChecked(deadline: number, signal: AbortSignal | undefined, started: number, handed: PgConnection | undefined): Promise<PgConnection> {
    for (let connection = handed; ; connection = undefined) {
      connection ??= this.core.takeIdle() ?? (await this.core.acquire(deadline, signal, started));
      const t = now();
      if (t >= connection.retireAt) {
        this.evict(connection, 'lifetime', undefined);
        continue;
      }
      const validated = this.#needsCheck(connection, t);
      if (validated && !(await this.validate(connection, deadline))) continue;
      const at = validated ? now() : t;
      return this.#leased(connection, at, at - started, validated);
    }
  }

  /** Probes a connection; a dead one is evicted. Used at checkout and by keepalive. */
  async validate(connection: PgConnection, deadline = Infinity): Promise<boolean> {
    this.stats.validations++;
    const generation = this.#generation;
    const timeout = Math.max(1, Math.min(this.#config.validationTimeoutMillis, deadline - now()));
    const alive = await connection.ping(timeout);
    this.#report.emitIfHeard('validate', () => ({ client: connection.client, alive }));
    if (alive) {
      connection.generation = generation;
      return true;
    }
    this.stats.failedValidations++;
    this.evict(connection, 'failed-check', connection.failure);
    return false;
  }

  #needsCheck(connection: PgConnection, t: number): boolean {
    if (connection.generation < this.#generation) return true;
    const lastSeen = Math.max(connection.idleSince, connection.checkedAt);
    const window = this.#config.validationWindowMillis;
    // A window of 0 checks every checkout, even one handed over in the same instant.
    return t - lastSeen > window || window === 0 || t >= connection.retireAt;
  }

  #leased(connection: PgConnection, t: number, waitMillis: number, validated: boolean): PgConnection {
    connection.idleBeforeCheckout = t - connection.idleSince;
    this.stats.acquiredAfter(waitMillis);
    this.#report.emit('acquire', connection.client);
    this.#report.emitIfHeard('checkout', () => ({ waitMillis, validated }));
    return connection;
  }

  // ---- checkin ----

  /** Takes a connection back from its user. A truthy `error` destroys it, as in pg.Pool. */
  checkin(connection: PgConnection, error: unknown): void {
    connection.uses++;
    this.#report.emit('release', error, connection.client);
    // Ended by the app (client.end()): as pg.Pool, it leaves the pool now, not when its socket closes.
    if (connection.state === 'leased' && isClientFinished(connection.client)) return this.evict(connection, 'died', connection.failure);
    checkin(this, this.#config, connection, error);
  }

  // ---- failures ----

  /**
   * Replaces a connection-level failure with a typed error that says whether the statement may
   * have taken effect ({@link OutcomeUnknownError}) or certainly did not ({@link ConnectionLostError});
   * other errors pass through. `sent`: the statement's bytes had been handed to the socket.
   */
  translate(error: unknown, connection: PgConnection, sent = true, timeoutMillis = this.#config.query_timeout): unknown {
    if (error instanceof LifelineError) return error;
    const kind = classifyFailure(error);
    if (kind === 'read-only' && this.#router.wantsWrites) this.#roleChanged(connection);
    if (kind === 'query-timeout') {
      // pg only stopped waiting: stop the server too, and drop a connection that may be dead.
      connection.abandon();
      return new QueryTimeoutError(timeoutMillis, this.diagnose(error, connection));
    }
    if (!(isConnectionError(error) || connection.failure !== undefined)) return error;
    // A query can see the failure before the socket reports it, and the connection may be
    // closed by then, so the server-wide suspicion is raised from here too.
    this.#noteFailure(connection, error);
    if (isConnectionError(error)) connection.heardFromServer(error);
    // A statement on a connection that died earlier gets a generic error from pg ("not queryable",
    // "terminated"); the failure recorded when it died says why. Whether the statement ran, and the
    // code and message pg.Pool would have rejected with, still come from its own error.
    const cause = connection.failure ?? error;
    const diagnosis = this.diagnose(cause, connection);
    return outcomeOf(error, sent) === 'unknown' ? new OutcomeUnknownError(cause, diagnosis, error) : new ConnectionLostError(cause, diagnosis, undefined, error);
  }

  /** Explains a failure of `connection`: cause, age, idle time, host, server settings, advice. */
  diagnose(error: unknown, connection: PgConnection): Diagnosis {
    const { ageMillis, idleMillis } = connection.facts();
    return diagnose(error, this.knowledge.facts(connection.target.key, ageMillis, idleMillis));
  }

  warn(message: string, fields: Record<string, unknown>): void {
    this.#report.log('warn', message, fields);
  }

  tuned(keepaliveIntervalMillis: number, reason: string): void {
    this.#report.log('info', `keepalive pings every ${keepaliveIntervalMillis} ms: ${reason}`, { keepaliveIntervalMillis });
    this.#maintenance.reschedule();
    this.#report.emit('tuned', { keepaliveIntervalMillis, reason });
  }


  /**
   * Whether work that failed with `error` may run again. Beyond the general rules, a write refused
   * by a read-only server (25006) on a pool that wants a writable one did not apply, and runs
   * again on the new primary.
   */
  retryable(error: unknown, options: RetryFacts): boolean {
    return isSafeToRetry(error, options) || (options.atomic === true && this.#refusedByFormerPrimary(error));
  }

  /** Whether a transaction that certainly did not commit may run again after `error`. */
  retryableTransaction(error: unknown): boolean {
    return isTransientFailure(error) || this.#refusedByFormerPrimary(error);
  }

  #refusedByFormerPrimary(error: unknown): boolean {
    return this.#router.wantsWrites && classifyFailure(error) === 'read-only';
  }

  // The server behind `connection` no longer takes writes (a failover demoted it, or a promotion
  // happened elsewhere): stop using it until it is rechecked.
  #roleChanged(connection: PgConnection): void {
    this.#router.markDown(connection.target);
    this.#report.log('warn', `${connection.target.key} refused a write: no longer primary; routing new connections elsewhere`, { host: connection.target.key });
    for (const other of [...this.core.resources()]) {
      if (other.target.key !== connection.target.key || other.state === 'opening') continue;
      if (other.state === 'idle') this.evict(other, 'role-changed', undefined);
      else other.retireAt = 0;
    }
  }

  retried(event: RetryEvent): void {
    this.stats.retried(event.kind);
    this.#report.log('debug', `retrying after ${event.kind} (attempt ${event.attempt})`, { kind: event.kind, attempt: event.attempt });
    this.#report.emit('retry', event);
  }

  /** Runs one statement on a fresh connection: what the commit resolver asks with. */
  readonly resolverQuery: ResolverQuery = async (sql, values, deadline) => {
    const connection = this.tryCheckout() ?? (await this.checkout(deadline, undefined, now(), (c) => c));
    try {
      const result = await connection.client.query(sql, values);
      this.checkin(connection, undefined);
      return result.rows as Record<string, unknown>[];
    } catch (error) {
      this.checkin(connection, isConnectionError(error) ? error : undefined);
      throw error;
    }
  };

  resolved(resolution: CommitResolution): void {
    this.stats.commitResolutions[resolution.status]++;
    this.#report.log(resolution.status === 'unknown' ? 'warn' : 'info', `commit outcome after a lost connection: ${resolution.status}`, { status: resolution.status });
  }

  /** The process was suspended or stalled: every connection must prove itself before reuse. */
  suspect(): void {
    this.#generation++;
    this.stats.suspensions++;
    this.#report.log('info', 'the process was suspended or stalled; every idle connection will be checked before reuse');
    this.#report.emit('suspend');
  }

  died(connection: PgConnection, error: Error): void {
    const inBackground = connection.state === 'idle' || connection.state === 'checking';
    // An idle connection that dies with no word from its server may have met a proxy's idle timeout.
    if (connection.state === 'idle' && sqlStateOf(error) === undefined && classifyFailure(error) === 'connection-lost') {
      this.knowledge.silentIdleDeath(connection.target.key, now() - connection.idleSince);
    }
    this.#noteFailure(connection, error);
    if (connection.state === 'idle') this.evict(connection, 'died', error);
    else this.core.markBroken(connection);
    // pg.Pool re-emits idle deaths as 'error', which crashes apps that do not listen.
    // The event is kept for those that do; the eviction itself is always reported.
    if (inBackground) this.#report.idleError(error, connection.client);
    // Re-read after the death was explained: the settings may be what changed.
    if (sqlStateOf(error) === '57P05') this.knowledge.forget(connection.target.key);
  }

  #noteFailure(connection: PgConnection, error: unknown): void {
    if (connection.failureNoted || !isServerWideFailure(error)) return;
    connection.failureNoted = true;
    this.#generation++;
    this.stats.invalidations++;
  }

  /** Closes a connection for `reason`, reporting it in stats and the `evict` event. */
  evict(connection: PgConnection, reason: EvictionReason, error: unknown): void {
    if (connection.state === 'closed') return;
    this.stats.evicted(reason);
    const diagnosis = error === undefined ? undefined : this.diagnose(error, connection);
    this.#report.evicted(connection.target.key, { client: connection.client, reason, error, diagnosis });
    this.core.destroy(connection);
  }

  // ---- ResourceHooks ----

  make(): PgConnection {
    return new PgConnection(this.#config, this, this.#generation, this.#router.plan());
  }

  async open(connection: PgConnection): Promise<void> {
    const startedAt = now();
    try {
      await connection.open(this.#router);
      // The first connection to each server learns its timeouts, to tune keepalive and explain failures.
      // Only for diagnosis and tuning: a server that will not say does not fail the open.
      if (!this.knowledge.knows(connection.target.key)) {
        const settings = await readServerSettings(connection.client).catch(() => undefined);
        if (settings !== undefined) {
          this.knowledge.learnServer(connection.target.key, settings);
          this.#maintenance.reschedule();
        }
      }
    } catch (error) {
      this.stats.connectErrors++;
      this.#report.openFailed(error, connection.target.key);
      throw error;
    }
    this.stats.connects++;
    const recovered = this.#report.opened(connection.target.key);
    this.onOpened?.(startedAt, recovered);
    // Closed while it opened (the pool ended): an app's 'connect' handler would query a closed client.
    if (connection.state === 'closed') return;
    this.#report.emit('connect', connection.client);
  }

  close(connection: PgConnection): void {
    const closing = connection.close();
    this.#closing.add(closing);
    void closing.then(() => this.#closing.delete(closing));
  }

  closed(connection: PgConnection): void {
    this.#report.emit('remove', connection.client);
  }

  isFatalOpenError(error: unknown): boolean {
    return isFatalOpenError(error);
  }

  retryCapMillis(error: unknown): number {
    return openRetryCapMillis(error);
  }

  unavailableError(error: unknown): Error {
    return new ServerUnavailableError(error);
  }

  fatalOpenError(error: unknown): Error {
    return fatalOpenError(error);
  }

  transitioned(connection: PgConnection, from: ResourceState): void {
    if (!this.#config.allowExitOnIdle) return;
    // Idle sockets must not keep the process alive; busy ones must.
    if (connection.state === 'idle') setSocketRef(connection.client, false);
    else if (from === 'idle') setSocketRef(connection.client, true);
  }

  // ---- sizes and shutdown ----

  /** Connections past their lifetime that are still checked out (pg.Pool's expiredCount). */
  expiredCount(): number {
    const t = now();
    let count = 0;
    for (const connection of this.core.resources()) if (connection.state !== 'opening' && t >= connection.retireAt) count++;
    return count;
  }

  snapshot(): PoolStats {
    const { total, idle, waiting, opening, max } = this.core.counts();
    return this.stats.snapshot(
      { total, idle, active: total - idle - opening, waiting, max, min: this.#config.min },
      { keepaliveIntervalMillis: this.knowledge.keepaliveMillis, learnedIdleKillMillis: this.knowledge.learnedIdleKillMillis },
    );
  }

  /**
   * Stops checkouts and maintenance, waits up to `shutdownTimeoutMillis` for checked-out clients,
   * then cuts whatever is left, and resolves once every socket is closed.
   */
  async end(): Promise<void> {
    this.#maintenance.stop();
    const closed = this.core.close((connection) => {
      // Idle ones say goodbye properly; one still opening has nothing worth waiting for.
      if (connection.state === 'opening') connection.destroy();
      else if (hasQueryInFlight(connection.client)) {
        // An app's 'connect' handler may still be running its setup query: ending the client now would
        // reject it where nobody listens. It closes once that finishes (or at the shutdown deadline).
        this.core.beginCheck(connection);
        return onReadyForQuery(connection.client, () => this.evict(connection, 'pool-ended', undefined));
      }
      this.evict(connection, 'pool-ended', undefined);
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#config.shutdownTimeoutMillis);
    });
    await Promise.race([closed, deadline]);
    clearTimeout(timer);
    this.core.abandonWaiters();
    for (const connection of [...this.core.resources()]) {
      connection.destroy();
      this.evict(connection, 'shutdown-timeout', undefined);
    }
    await Promise.all(this.#closing);
  }
}
