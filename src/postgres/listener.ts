import { EventEmitter } from 'node:events';
import type { Notification } from 'pg';
import { AbortedError, ConfigError, ListenError } from '../errors.js';
import type { DisconnectedEvent, ListenSession, ListenSubscriber, ReconnectedEvent } from './listen-session.js';

/** A notification, as pg delivers it: the channel, the payload as sent, and the sender's backend pid. */
export type ListenNotification = Notification;

/** Called for each notification on a channel. A throw or rejection goes to the listener's `error` event. */
export type NotificationHandler = (message: ListenNotification) => void | Promise<void>;

/** Options of `pool.listen()`. */
export interface ListenOptions {
  /**
   * Runs after a lost session is back and listens to every channel again, before the
   * `reconnected` event: re-read whatever may have been sent meanwhile. A throw or rejection goes
   * to the `error` event.
   */
  readonly onReconnect?: ((event: ReconnectedEvent) => void | Promise<void>) | undefined;
  /** Stop waiting for the first LISTEN when it aborts (the call rejects with `AbortedError`); later, close the listener. */
  readonly signal?: AbortSignal | undefined;
  /**
   * The pool reaches the server through a pooler in session mode, where LISTEN works. Without it,
   * a session found to run through a pooler is refused with `ListenError`: in transaction mode the
   * pooler hands the session to other clients between transactions, and notifications never arrive.
   */
  readonly sessionPooler?: boolean | undefined;
}

/** The events of a {@link Listener}. */
export interface ListenerEvents {
  notification: [message: ListenNotification];
  disconnected: [event: DisconnectedEvent];
  reconnected: [event: ReconnectedEvent];
  error: [error: Error];
  close: [];
}

// PostgreSQL truncates identifiers longer than this many bytes, which would listen to another name.
const MAX_CHANNEL_BYTES = 63;

/**
 * What `pool.listen()` returns: a set of channels and their handlers on the pool's shared LISTEN
 * session. Notifications are delivered at most once: what is sent while the session is down is
 * lost, and every such window is reported by `disconnected` and `reconnected`.
 */
export class Listener extends EventEmitter<ListenerEvents> {
  readonly #session: ListenSession;
  readonly #handlers = new Map<string, NotificationHandler>();
  readonly #onReconnect: ListenOptions['onReconnect'];
  readonly #warn: (message: string, fields: Record<string, unknown>) => void;
  readonly #subscriber: ListenSubscriber;
  #closed = false;
  /** Set once a LISTEN of this listener succeeded. */
  #listened = false;
  #reconnecting: Promise<void> = Promise.resolve();

  /** Use `pool.listen()`. */
  constructor(session: ListenSession, options: ListenOptions | undefined, warn: (message: string, fields: Record<string, unknown>) => void) {
    super();
    this.#session = session;
    this.#onReconnect = options?.onReconnect;
    this.#warn = warn;
    this.#subscriber = {
      notify: (message) => this.#notify(message),
      disconnected: (event) => this.emit('disconnected', event),
      reconnected: (event) => this.#reconnected(event),
      // Before its first LISTEN succeeded, the caller hears it as pool.listen()'s rejection: once is enough.
      failed: (error) => {
        if (this.#listened) this.#report(error);
      },
      sessionPooler: options?.sessionPooler === true,
    };
  }

  /** The channels listened to. */
  get channels(): readonly string[] {
    return [...this.#handlers.keys()];
  }

  /** True once `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Listens to one more channel on the same session; resolves once its LISTEN has succeeded.
   * A channel already listened to by this listener gets the new handler.
   */
  async add(channel: string, handler: NotificationHandler, options?: { signal?: AbortSignal | undefined }): Promise<void> {
    checkChannel(channel);
    if (typeof handler !== 'function') throw new ConfigError('handler', 'a function', handler);
    if (this.#closed) throw new ListenError('This listener is closed: call pool.listen() for a new one.', undefined);
    const known = this.#handlers.has(channel);
    this.#handlers.set(channel, handler);
    if (known) return;
    const listening = this.#session.subscribe(channel, this.#subscriber);
    // Once aborted, nobody awaits it; its later rejection must not surface as unhandled.
    listening.catch(() => undefined);
    try {
      await (options?.signal === undefined ? listening : abortable(listening, options.signal));
      this.#listened = true;
    } catch (error) {
      // Refused, timed out or aborted: this listener does not keep wanting the channel.
      if (this.#handlers.get(channel) === handler) this.#drop(channel);
      throw error;
    }
  }

  /** Stops listening to `channel` (the session UNLISTENs once no listener wants it). */
  remove(channel: string): void {
    if (this.#handlers.has(channel)) this.#drop(channel);
  }

  /** Stops listening to every channel of this listener. Never waits on the network. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    for (const channel of [...this.#handlers.keys()]) this.#drop(channel);
    this.emit('close');
    return Promise.resolve();
  }

  #drop(channel: string): void {
    this.#handlers.delete(channel);
    this.#session.unsubscribe(channel, this.#subscriber);
  }

  #notify(message: ListenNotification): void {
    const handler = this.#handlers.get(message.channel);
    this.emit('notification', message);
    if (handler === undefined) return;
    try {
      const result = handler(message);
      if (result !== undefined && typeof (result as Promise<void>).then === 'function') (result as Promise<void>).then(undefined, (error: unknown) => this.#report(error));
    } catch (error) {
      this.#report(error);
    }
  }

  // onReconnect, then the event; one reconnection's turn after another's.
  #reconnected(event: ReconnectedEvent): void {
    this.#reconnecting = this.#reconnecting.then(async () => {
      try {
        await this.#onReconnect?.(event);
      } catch (error) {
        this.#report(error);
      }
      if (!this.#closed) this.emit('reconnected', event);
    });
  }

  // An 'error' with no listener would crash the process; a handler's bug must not.
  #report(error: unknown): void {
    const failure = error instanceof Error ? error : new Error(String(error));
    if (this.listenerCount('error') > 0) this.emit('error', failure);
    else this.#warn(`a LISTEN handler or session failed (add an 'error' listener to the listener to handle it): ${failure.message}`, {});
  }
}

// Rejects as soon as `signal` aborts, before anything dropping the channel could resolve `listening`.
async function abortable(listening: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw new AbortedError('Waiting for LISTEN', signal.reason);
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(new AbortedError('Waiting for LISTEN', signal.reason));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([listening, aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort as () => void);
  }
}

function checkChannel(channel: unknown): asserts channel is string {
  if (typeof channel !== 'string' || channel === '' || Buffer.byteLength(channel) > MAX_CHANNEL_BYTES) {
    throw new ConfigError('channel', `a channel name of 1 to ${MAX_CHANNEL_BYTES} bytes`, channel);
  }
}
