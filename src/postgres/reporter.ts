import type * as pg from 'pg';
import type { ResolvedConfig } from '../config.js';
import type { Diagnosis } from '../diagnostics/diagnose.js';
import { writeLog, type LogLevel } from '../diagnostics/logger.js';
import { sqlStateOf } from '../errors.js';
import type { EvictionReason, StatsRecorder } from '../stats.js';

/** Details of the `evict` event. */
export interface EvictionEvent {
  readonly client: pg.Client;
  readonly reason: EvictionReason;
  /** The failure behind it, for `died`, `failed-check` and `released-with-error`. */
  readonly error: unknown;
  /** What the failure most likely was, and what to do (when there was a failure). */
  readonly diagnosis: Diagnosis | undefined;
}

/**
 * A copy of `error` carrying `client`, as pg.Pool's idle `error` event sets `err.client`. A copy,
 * so the error the pool keeps as the connection's failure does not hold the client.
 */
function withClient(error: Error, client: pg.Client): Error {
  const copy = Object.assign(Object.create(Object.getPrototypeOf(error) as object) as Error, error, { client });
  Object.defineProperty(copy, 'message', { value: error.message, writable: true, configurable: true });
  Object.defineProperty(copy, 'stack', { value: error.stack, writable: true, configurable: true });
  if (error.cause !== undefined) copy.cause = error.cause;
  return copy;
}

/** Where pool events go (the Pool itself). */
export interface PoolEvents {
  emit(event: string | symbol, ...args: unknown[]): boolean;
  listenerCount(event: string | symbol): number;
}

/**
 * Says what the pool does: pool events, pg's `log` option and the `logger` option, plus the
 * outage bookkeeping (from the first failed open to the next successful one).
 */
export class Reporter {
  readonly #config: ResolvedConfig;
  readonly #events: PoolEvents;
  readonly #stats: StatsRecorder;
  #outageSince: number | undefined;

  constructor(config: ResolvedConfig, events: PoolEvents, stats: StatsRecorder) {
    this.#config = config;
    this.#events = events;
    this.#stats = stats;
  }

  emit(event: string, ...args: unknown[]): void {
    this.#events.emit(event, ...args);
  }

  /** Emits only if someone listens, for events that would otherwise cost on every checkout. */
  emitIfHeard(event: string, details: () => unknown): void {
    if (this.#events.listenerCount(event) > 0) this.#events.emit(event, details());
  }

  listens(event: string): boolean {
    return this.#events.listenerCount(event) > 0;
  }

  // pg's `log` option hears everything; the `logger` option gets levels.
  log(level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
    this.#config.log?.(message, fields);
    writeLog(this.#config.logger, level, message, fields);
  }

  openFailed(error: unknown, host: string): void {
    this.log('warn', `could not open a connection to ${host}: ${error instanceof Error ? error.message : String(error)}`, { host, sqlState: sqlStateOf(error) });
    this.emit('connectFailed', { error, host });
    if (this.#outageSince !== undefined) return;
    this.#outageSince = Date.now();
    this.emit('outage', { error, host });
  }

  /** A connection opened; true when it ended an outage. */
  opened(host: string): boolean {
    const recovered = this.#outageSince !== undefined;
    if (recovered) {
      const downMillis = Date.now() - (this.#outageSince as number);
      this.#stats.lastOutage = { startedAt: new Date(this.#outageSince as number).toISOString(), downMillis };
      this.#outageSince = undefined;
      this.log('info', `the server is reachable again after ${downMillis} ms`, { downMillis });
      this.emit('recovered', { downMillis });
    }
    this.log('debug', 'opened a connection', { host });
    return recovered;
  }

  /** pg.Pool's 'error' event for a connection that died idle, sent only to an app that listens: pg.Pool's crashes apps that do not. */
  idleError(error: Error, client: pg.Client): void {
    if (this.listens('error')) this.emit('error', withClient(error, client), client);
  }

  /** A connection is being closed: the log line and the `evict` event. */
  evicted(host: string, event: EvictionEvent): void {
    const { reason, diagnosis } = event;
    this.log(reason === 'died' || reason === 'failed-check' ? 'info' : 'debug', `closing a connection (${reason})${diagnosis ? `: ${diagnosis.summary}` : ''}`, {
      reason,
      host,
      cause: diagnosis?.cause,
    });
    this.emit('evict', event);
  }
}
