import type { Notification } from 'pg';
import type { ResolvedConfig } from '../config.js';
import { fullJitterDelay } from '../core/backoff.js';
import { now } from '../core/resource-pool.js';
import type { Diagnosis } from '../diagnostics/diagnose.js';
import { ListenError } from '../errors.js';
import { behindPooler } from './pooler.js';
import { isConnectionError, isPermanentConnectError, isTransientFailure } from './classify.js';
import { PgConnection, type ConnectionOwner } from './connection.js';
import { openFailedErrors, quoteChannel, refusedError, timedOutError } from './listen-errors.js';
import { heartbeatMillis, proveSession } from './listen-heartbeat.js';
import { ListenWaiters } from './listen-waiters.js';
import { HostRouter } from './host-router.js';
import { OPEN_RETRY_BASE_MILLIS, openRetryCapMillis } from './open-policy.js';

/**
 * The life of the shared LISTEN session.
 * - `idle`: no channel is wanted, so no session is open.
 * - `connecting`: opening a session and listening to every wanted channel.
 * - `listening`: the session is up and has LISTENed to every wanted channel.
 * - `backoff`: the session died or could not be opened; waiting to try again.
 * - `closed`: the pool ended; nothing reopens.
 */
export type ListenState = 'idle' | 'connecting' | 'listening' | 'backoff' | 'closed';

/** What the session tells each listener. */
export interface ListenSubscriber {
  /** A notification on one of this subscriber's channels. */
  notify(message: Notification): void;
  /** The session was lost; notifications sent from `since` on may be lost until it is back. */
  disconnected(event: DisconnectedEvent): void;
  /** The session is back and listens to every channel again. */
  reconnected(event: ReconnectedEvent): void;
  /** Something failed that the app should hear about (a session that cannot listen, a reconnect refused for good). */
  failed(error: Error): void;
  /** The app said its pooler runs in session mode, where LISTEN works. */
  readonly sessionPooler: boolean;
}

/** Details of a listener's `disconnected` event. */
export interface DisconnectedEvent {
  /** Why the session was lost. */
  readonly error: Error;
  readonly diagnosis: Diagnosis | undefined;
  /** When the session was last proven to be listening: a notification sent after this may be lost. */
  readonly since: Date;
}

/** Details of a listener's `reconnected` event. */
export interface ReconnectedEvent {
  /** From the last moment the old session was proven listening to the moment the new one was. */
  readonly downtimeMillis: number;
  /** The channels listened to again. */
  readonly channels: readonly string[];
}

/** Counters of the LISTEN session, in `pool.stats().listen`. */
export interface ListenStats {
  readonly state: ListenState;
  readonly listeners: number;
  readonly channels: number;
  /** Sessions lost and opened again. */
  readonly reconnects: number;
  /** The last window in which notifications may have been lost, in milliseconds. */
  readonly lastDowntimeMillis: number | undefined;
}

/** What the session needs from the pool. */
export interface ListenHost {
  diagnose(error: unknown, connection: PgConnection): Diagnosis;
  warn(message: string, fields: Record<string, unknown>): void;
}

// A session that keeps failing to open for a reason no retry fixes is retried this slowly, never given up.
const PERMANENT_RETRY_CAP_MILLIS = 5000;

/**
 * The pool's one dedicated LISTEN session, shared by every listener: never counted against `max`,
 * never handed to other work. It proves itself with a heartbeat, and when lost it reconnects with
 * backoff for as long as anyone listens, LISTENs every channel again, and reports the window in
 * which notifications may have been lost.
 */
export class ListenSession implements ConnectionOwner {
  readonly #config: ResolvedConfig;
  readonly #host: ListenHost;
  // LISTEN is refused on a standby, so a multi-host pool listens on the primary whatever it asks for.
  readonly #router: HostRouter;
  readonly #wanted = new Map<string, Set<ListenSubscriber>>();
  #state: ListenState = 'idle';
  #connection: PgConnection | undefined;
  /** Channels the current session has LISTENed to. */
  #active = new Set<string>();
  readonly #waiters: ListenWaiters;
  /** Why the last attempt to open the session failed, while it keeps failing: what a waiter that gives up is told. */
  #openFailure: { error: unknown; diagnosis: Diagnosis } | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  /** When the session was last proven listening (a heartbeat or LISTEN began after it): the start of any loss window. */
  #provenAt = 0;
  #lostAt: number | undefined;
  #syncing: Promise<void> | undefined;
  #reconnects = 0;
  #lastDowntimeMillis: number | undefined;
  /** listenHeartbeatMillis, or less where the server's idle_session_timeout would end a quieter session. */
  #heartbeatMillis: number;
  #attemptStartedAt = 0;

  constructor(config: ResolvedConfig, host: ListenHost) {
    this.#config = config;
    this.#host = host;
    this.#heartbeatMillis = config.listenHeartbeatMillis;
    const hosts = config.hosts.targets.length > 1 ? { ...config.hosts, targetSessionAttrs: 'primary' as const } : config.hosts;
    this.#router = new HostRouter(hosts, config.hostRecheckMillis);
    this.#waiters = new ListenWaiters(config.connectionTimeoutMillis, (channel) => this.#timedOut(channel));
  }

  get state(): ListenState {
    return this.#state;
  }

  stats(listeners: number): ListenStats {
    return { state: this.#state, listeners, channels: this.#wanted.size, reconnects: this.#reconnects, lastDowntimeMillis: this.#lastDowntimeMillis };
  }

  /** Adds `subscriber` to `channel`; resolves once the session listens to it. */
  subscribe(channel: string, subscriber: ListenSubscriber): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(new ListenError('The pool has ended: no new LISTEN can start.', undefined));
    let subscribers = this.#wanted.get(channel);
    if (subscribers === undefined) this.#wanted.set(channel, (subscribers = new Set()));
    subscribers.add(subscriber);
    if (this.#state === 'listening' && this.#active.has(channel)) return Promise.resolve();
    const listening = this.#waiters.wait(channel);
    if (this.#state === 'idle') this.#connect();
    else if (this.#state === 'listening') this.#sync();
    return listening;
  }

  /** Removes `subscriber` from `channel`; the session stops listening to a channel nobody wants. */
  unsubscribe(channel: string, subscriber: ListenSubscriber): void {
    const subscribers = this.#wanted.get(channel);
    if (subscribers === undefined || !subscribers.delete(subscriber)) return;
    if (subscribers.size > 0) return;
    this.#wanted.delete(channel);
    this.#waiters.resolve((c) => c === channel);
    if (this.#wanted.size === 0) this.#stop('idle');
    else if (this.#state === 'listening') this.#sync();
  }

  /** Stops for good (the pool ended): closes the session, cancels every timer, fails anyone waiting. */
  async end(): Promise<void> {
    const connection = this.#connection;
    this.#stop('closed');
    this.#wanted.clear();
    await connection?.close();
  }

  /**
   * The pool opened a connection, begun at `startedAt`. If the session's own attempt began earlier
   * and its server has still sent nothing, that attempt is stuck (begun while the network was dark):
   * it is dropped and another starts now. After an outage (`recovered`), a session waiting out its
   * backoff tries at once too.
   */
  serverAnswered(startedAt: number, recovered: boolean): void {
    const attempt = this.#connection;
    if (this.#state === 'backoff' && recovered) this.#connect();
    else if (this.#state === 'connecting' && this.#attemptStartedAt < startedAt && attempt?.unanswered === true) {
      this.#connect();
      // Only destroyed: its open then fails and settles (a close() first would leave pg's connect pending).
      attempt.destroy();
    }
  }

  // ---- ConnectionOwner ----

  died(connection: PgConnection, error: Error): void {
    // While connecting, the open itself fails and handles it.
    if (connection !== this.#connection || this.#state !== 'listening') return;
    this.#lost(error, connection);
  }

  closed(): void {
    // The session's record is dropped with it; nothing else holds it.
  }

  // ---- the session's life ----

  #connect(): void {
    this.#state = 'connecting';
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const connection = new PgConnection(this.#config, this, 0, this.#router.plan());
    this.#connection = connection;
    this.#attemptStartedAt = now();
    void this.#open(connection);
  }

  async #open(connection: PgConnection): Promise<void> {
    try {
      await connection.open(this.#router);
      if (connection !== this.#connection) return void connection.close();
      if (!this.#poolerAllowed() && (await behindPooler(connection.client))) return this.#refusePooler(connection);
      // Only now: opening may have tried several hosts, each with a client of its own.
      connection.client.on('notification', (message: Notification) => this.#deliver(connection, message));
      this.#heartbeatMillis = await heartbeatMillis(connection.client, this.#config.listenHeartbeatMillis);
      this.#active = new Set();
      this.#provenAt = now();
      await this.#listenAll(connection);
    } catch (error) {
      if (connection !== this.#connection) return;
      connection.destroy();
      void connection.close();
      this.#openFailed(error, connection);
      return;
    }
    if (connection !== this.#connection) return;
    // Every channel was refused (a standby): keep no session open for nobody.
    if (this.#wanted.size === 0) return this.#stop('idle');
    this.#state = 'listening';
    this.#failures = 0;
    this.#openFailure = undefined;
    this.#armHeartbeat();
    const reconnect = this.#lostAt !== undefined;
    if (reconnect) {
      const downtimeMillis = Math.round(now() - (this.#lostAt as number));
      this.#lostAt = undefined;
      this.#reconnects++;
      this.#lastDowntimeMillis = downtimeMillis;
      const channels = [...this.#active];
      for (const subscriber of this.#subscribers()) subscriber.reconnected({ downtimeMillis, channels });
    }
    this.#resolveWaiters();
  }

  // LISTENs to every wanted channel not yet active, and UNLISTENs the unwanted, until both sets agree.
  async #listenAll(connection: PgConnection): Promise<void> {
    for (;;) {
      const missing = [...this.#wanted.keys()].find((channel) => !this.#active.has(channel));
      const extra = [...this.#active].find((channel) => !this.#wanted.has(channel));
      if (missing === undefined && extra === undefined) return;
      const channel = (missing ?? extra) as string;
      try {
        await connection.client.query(`${missing !== undefined ? 'LISTEN' : 'UNLISTEN'} ${quoteChannel(channel)}`);
      } catch (error) {
        if (isConnectionError(error) || connection.failure !== undefined) throw error;
        // Opened again after a loss, the one host may be a standby for a while (a moved address, a
        // failover under way): an outage to retry, not a reason to drop channels that were listening.
        if (this.#lostAt !== undefined && missing !== undefined) throw refusedError(channel, error);
        // The server refused this channel (a standby, too many listeners): only its waiters fail.
        this.#refuse(channel, error);
        continue;
      }
      if (missing !== undefined) this.#active.add(channel);
      else this.#active.delete(channel);
    }
  }

  #sync(): void {
    const connection = this.#connection;
    if (connection === undefined || this.#syncing !== undefined) return;
    this.#syncing = this.#listenAll(connection).then(
      () => {
        this.#syncing = undefined;
        if (connection !== this.#connection || this.#state !== 'listening') return;
        if (this.#wanted.size === 0) this.#stop('idle');
        else this.#resolveWaiters();
      },
      (error: unknown) => {
        this.#syncing = undefined;
        if (connection === this.#connection) this.#lost(error instanceof Error ? error : new Error(String(error)), connection);
      },
    );
  }

  #refuse(channel: string, error: unknown): void {
    const refusal = refusedError(channel, error);
    for (const subscriber of this.#wanted.get(channel) ?? []) subscriber.failed(refusal);
    this.#wanted.delete(channel);
    this.#waiters.reject((c) => c === channel, refusal);
  }

  #poolerAllowed(): boolean {
    return [...this.#subscribers()].some((subscriber) => subscriber.sessionPooler);
  }

  // No retry can fix it: every waiter and listener hears why, and the session stops.
  #refusePooler(connection: PgConnection): void {
    if (connection !== this.#connection) return void connection.close();
    const refusal = new ListenError(
      'LISTEN was not started: the connection goes through a connection pooler (its backend pid is not the server\'s), and in ' +
        'transaction pooling (PgBouncer, Supavisor, RDS Proxy) notifications never arrive. Point the pool that listens at the ' +
        'server directly, or pass { sessionPooler: true } to pool.listen() if the pooler runs in session mode.',
      undefined,
    );
    for (const subscriber of this.#subscribers()) subscriber.failed(refusal);
    this.#waiters.reject(() => true, refusal);
    this.#wanted.clear();
    this.#stop('idle');
  }

  #resolveWaiters(): void {
    this.#waiters.resolve((channel) => this.#active.has(channel));
  }

  #openFailed(error: unknown, connection: PgConnection): void {
    this.#failures++;
    const diagnosis = this.#host.diagnose(error, connection);
    this.#openFailure = { error, diagnosis };
    // An outage that began before the session was ever up loses nothing: nobody listened yet.
    const permanent = isPermanentConnectError(error) || !isTransientFailure(error);
    if (permanent) {
      const { waiting, listening } = openFailedErrors(error, diagnosis);
      // Those still waiting for their first LISTEN hear it at once, as pool.connect() would; the listening ones keep retrying.
      this.#waiters.reject(() => true, waiting);
      for (const subscriber of this.#subscribers()) subscriber.failed(listening);
    }
    this.#backoff(permanent ? PERMANENT_RETRY_CAP_MILLIS : openRetryCapMillis(error));
  }

  // What a caller whose first LISTEN outlived connectionTimeoutMillis is told.
  #timedOut(channel: string): ListenError {
    return timedOutError(channel, this.#config.connectionTimeoutMillis, this.#openFailure);
  }

  #lost(error: Error, connection: PgConnection): void {
    if (this.#state === 'closed' || this.#state === 'idle') return;
    const wasListening = this.#state === 'listening';
    connection.destroy();
    void connection.close();
    this.#connection = undefined;
    this.#active = new Set();
    if (wasListening) {
      this.#lostAt = this.#provenAt;
      const diagnosis = this.#host.diagnose(error, connection);
      this.#host.warn(`the LISTEN session was lost: ${diagnosis.summary}; reconnecting`, { cause: diagnosis.cause });
      const event: DisconnectedEvent = { error, diagnosis, since: new Date(Date.now() - (now() - this.#provenAt)) };
      for (const subscriber of this.#subscribers()) subscriber.disconnected(event);
    }
    this.#failures++;
    this.#backoff(openRetryCapMillis(error));
  }

  #backoff(capMillis: number): void {
    if (this.#state === 'closed' || this.#wanted.size === 0) return;
    this.#state = 'backoff';
    this.#connection = undefined;
    clearTimeout(this.#timer);
    // Kept referenced: a process whose only work is listening must not exit while the server is down.
    this.#timer = setTimeout(() => this.#connect(), fullJitterDelay(this.#failures - 1, Math.min(OPEN_RETRY_BASE_MILLIS, capMillis), capMillis));
  }

  #armHeartbeat(): void {
    clearTimeout(this.#timer);
    const interval = this.#heartbeatMillis * (1 - Math.random() * 0.1);
    // The socket keeps the process alive while listening; the heartbeat alone must not.
    this.#timer = setTimeout(() => void this.#heartbeat(), interval);
    this.#timer.unref();
  }

  async #heartbeat(): Promise<void> {
    const connection = this.#connection;
    if (connection === undefined || this.#state !== 'listening') return;
    const started = now();
    try {
      await proveSession(connection.client, { timeoutMillis: this.#config.validationTimeoutMillis, multiHost: this.#config.hosts.targets.length > 1, active: this.#active });
      if (connection !== this.#connection) return;
      this.#provenAt = started;
      this.#armHeartbeat();
    } catch (error) {
      if (connection !== this.#connection) return;
      if (error instanceof ListenError) {
        this.#host.warn(`${error.message} Listening again.`, {});
        for (const subscriber of this.#subscribers()) subscriber.failed(error);
      }
      this.#lost(error instanceof Error ? error : new Error(String(error)), connection);
    }
  }

  #deliver(connection: PgConnection, message: Notification): void {
    if (connection !== this.#connection) return;
    for (const subscriber of this.#wanted.get(message.channel) ?? []) subscriber.notify(message);
  }

  #subscribers(): Set<ListenSubscriber> {
    const all = new Set<ListenSubscriber>();
    for (const subscribers of this.#wanted.values()) for (const subscriber of subscribers) all.add(subscriber);
    return all;
  }

  #stop(state: 'idle' | 'closed'): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const connection = this.#connection;
    this.#connection = undefined;
    this.#active = new Set();
    this.#lostAt = undefined;
    this.#failures = 0;
    this.#state = state;
    if (connection !== undefined) void connection.close();
    this.#waiters.reject(() => true, new ListenError('The pool has ended before LISTEN succeeded.', undefined));
  }
}
