import type { ResolvedConfig } from '../config.js';
import { now, type ResourcePool } from '../core/resource-pool.js';
import type { EvictionReason } from '../stats.js';
import type { PgConnection } from './connection.js';
import { InFlightMonitor, type MonitorOwner } from './monitor.js';

/** What the maintenance loop works on. */
export interface MaintainedPool {
  readonly core: ResourcePool<PgConnection>;
  validate(connection: PgConnection): Promise<boolean>;
  evict(connection: PgConnection, reason: EvictionReason, error: unknown): void;
  /** The process was suspended or stalled: every connection must prove itself before reuse. */
  suspect(): void;
  /** The keepalive interval in force (tuned below the server's and the network's idle limits); 0 off. */
  readonly keepaliveMillis: number;
  /** The idle timeout in force (tuned below those limits when keepalive is off); 0 never. */
  readonly idleTimeoutMillis: number;
}

const MIN_TICK_MILLIS = 25;
const MAX_TICK_MILLIS = 1000;
// A tick this much later than planned, on either clock, means the process did not run meanwhile.
const SUSPENSION_MILLIS = 2000;

/**
 * All of the pool's background work in one unref'd timer: retiring old and idle connections,
 * pinging idle ones so dead ones are found before a checkout needs them, and keeping `min` open.
 */
export class Maintenance {
  readonly #pool: MaintainedPool;
  readonly #config: ResolvedConfig;
  #tickMillis: number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #lastMonotonic = now();
  #lastWall = Date.now();
  readonly #monitor: InFlightMonitor;

  constructor(pool: MaintainedPool, config: ResolvedConfig, monitored: MonitorOwner) {
    this.#pool = pool;
    this.#config = config;
    this.#monitor = new InFlightMonitor(config, monitored);
    this.#tickMillis = this.#currentTick();
  }

  // A quarter of the shortest deadline keeps each one late by at most a quarter. The keepalive
  // interval can be tuned down at any time, so this is worked out again for every tick.
  #currentTick(): number {
    const deadlines = [this.#pool.idleTimeoutMillis, this.#pool.keepaliveMillis, this.#config.maxLifetimeMillis, this.#config.monitorGraceMillis].filter((d) => d > 0);
    return Math.min(MAX_TICK_MILLIS, Math.max(MIN_TICK_MILLIS, Math.min(...deadlines, Infinity) / 4));
  }

  start(): void {
    if (this.#stopped || this.#timer !== undefined) return;
    this.#tickMillis = this.#currentTick();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#tick();
      this.start();
    }, this.#tickMillis);
    this.#timer.unref();
  }

  /**
   * Called on checkout with the current time: if the loop is overdue (a thaw whose first event is a
   * request, before the timer had its turn), detect the suspension now. One comparison otherwise.
   */
  catchUp(t: number): void {
    if (t - this.#lastMonotonic > this.#tickMillis + SUSPENSION_MILLIS) this.#detectSuspension(t);
  }

  /** Re-arms the timer at once, for a deadline that just got shorter (a keepalive tuned down). */
  reschedule(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.start();
  }

  stop(): void {
    this.#stopped = true;
    this.#monitor.stop();
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const { core } = this.#pool;
    const { min } = this.#config;
    const idleTimeoutMillis = this.#pool.idleTimeoutMillis;
    const t = now();
    this.#detectSuspension(t);
    const keepalive = this.#pool.keepaliveMillis;
    for (const connection of [...core.idle()]) {
      if (t >= connection.retireAt) {
        this.#pool.evict(connection, 'lifetime', undefined);
      } else if (idleTimeoutMillis > 0 && core.size > min && t - connection.idleSince >= idleTimeoutMillis) {
        this.#pool.evict(connection, 'idle-timeout', undefined);
      } else if (keepalive > 0 && t - Math.max(connection.idleSince, connection.checkedAt) >= keepalive * connection.keepaliveJitter) {
        core.beginCheck(connection);
        void this.#pool.validate(connection).then((alive) => {
          if (alive) core.release(connection);
        });
      }
    }
    // Silent statements in flight, checked from this same tick: no timer per statement.
    this.#monitor.tick(t);
    core.warm();
  }

  // A laptop sleep stops the monotonic clock but not the wall clock; a frozen container or a
  // stalled event loop delays the tick on both. Either way the network may have moved on without
  // us: NATs and proxies drop idle flows, servers restart.
  #detectSuspension(t: number): void {
    const wall = Date.now();
    const monotonicLate = t - this.#lastMonotonic - this.#tickMillis;
    const wallLate = wall - this.#lastWall - this.#tickMillis;
    this.#lastMonotonic = t;
    this.#lastWall = wall;
    if (monotonicLate > SUSPENSION_MILLIS || wallLate - monotonicLate > SUSPENSION_MILLIS) this.#pool.suspect();
  }
}
