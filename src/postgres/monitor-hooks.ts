// What the in-flight monitor does to the pool once it has a verdict: counts it, reports it, and
// cuts off the connections it condemned. Kept apart from the manager, which only lends its parts.
import type { ResolvedConfig } from '../config.js';
import type { ResourcePool } from '../core/resource-pool.js';
import type { StatsRecorder } from '../stats.js';
import type { PgConnection } from './connection.js';
import { hasQueryInFlight } from './internals.js';
import type { MonitorOwner } from './monitor.js';
import type { Reporter } from './reporter.js';
import { SilentConnectionError } from './silence.js';

/** The pool's side of the monitor of statements in flight. */
export class MonitorHooks implements MonitorOwner {
  readonly #core: ResourcePool<PgConnection>;
  readonly #stats: StatsRecorder;
  readonly #report: Reporter;
  readonly #config: ResolvedConfig;

  constructor(core: ResourcePool<PgConnection>, stats: StatsRecorder, report: Reporter, config: ResolvedConfig) {
    this.#core = core;
    this.#stats = stats;
    this.#report = report;
    this.#config = config;
  }

  connections(): Iterable<PgConnection> {
    return this.#core.resources();
  }

  cutOff(connection: PgConnection, error: SilentConnectionError): void {
    this.#stats.monitor.cutOff++;
    this.#report.log('warn', error.message, { host: connection.target.key, verdict: error.verdict, silentMillis: error.silentMillis });
    this.#report.emit('monitor', { client: connection.client, host: connection.target.key, verdict: error.verdict, silentMillis: error.silentMillis });
    connection.cutOff(error);
  }

  hostUnreachable(host: string, silentMillis: number): void {
    this.#stats.monitor.hostsDown++;
    this.#report.log('warn', `${host} did not answer a monitor connection in ${this.#config.monitorDetectionMillis} ms; cutting off its statements in flight`, { host, silentMillis });
    this.#report.emit('hostDown', { host, silentMillis, detectionMillis: this.#config.monitorDetectionMillis });
    for (const connection of [...this.#core.resources()]) {
      if (connection.target.key !== host) continue;
      // Idle ones must prove themselves alive before anyone gets them.
      if (connection.state === 'idle') connection.generation = -1;
      else if (connection.state === 'leased' && hasQueryInFlight(connection.client)) {
        this.#stats.monitor.cutOff++;
        connection.cutOff(new SilentConnectionError('host-unreachable', silentMillis, host));
      }
    }
  }

  checked(_host: string, answered: boolean): void {
    this.#stats.monitor.checks++;
    if (!answered) this.#stats.monitor.unanswered++;
  }
}
