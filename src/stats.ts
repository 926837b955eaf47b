import type { FailureKind } from './postgres/classify.js';
import type { ListenStats } from './postgres/listen-session.js';

/** Why the pool closed a connection. */
export type EvictionReason =
  | 'died'
  | 'failed-check'
  | 'idle-timeout'
  | 'lifetime'
  | 'max-uses'
  | 'released-with-error'
  | 'dirty-session'
  | 'query-in-flight'
  | 'pool-ended'
  | 'shutdown-timeout'
  | 'role-changed';

const REASONS: readonly EvictionReason[] = [
  'died',
  'failed-check',
  'idle-timeout',
  'lifetime',
  'max-uses',
  'released-with-error',
  'dirty-session',
  'query-in-flight',
  'pool-ended',
  'shutdown-timeout',
  'role-changed',
];

/** A snapshot of the pool, from `pool.stats()`. */
export interface PoolStats {
  /** Open connections plus those being opened. */
  readonly total: number;
  readonly idle: number;
  /** Checked out, or busy with a keepalive ping or a rollback. */
  readonly active: number;
  readonly waiting: number;
  readonly max: number;
  readonly min: number;
  /** Successful checkouts, through connect() and query() alike. */
  readonly acquired: number;
  /** Connections opened, and attempts that failed. */
  readonly connects: number;
  readonly connectErrors: number;
  /** Checkout and keepalive probes run, and those that found a dead connection. */
  readonly validations: number;
  readonly failedValidations: number;
  /** Times a server-wide failure made every older connection suspect. */
  readonly invalidations: number;
  /** Times the process was found to have been suspended or stalled (every idle connection suspect). */
  readonly suspensions: number;
  readonly evictions: Readonly<Record<EvictionReason, number>>;
  /** Retries run, in all and by the kind of failure that caused them. */
  readonly retries: number;
  readonly retriesByKind: Readonly<Partial<Record<FailureKind, number>>>;
  /** Connections lost during COMMIT, by what the pool then found out. */
  readonly commitResolutions: Readonly<{ committed: number; aborted: number; unknown: number }>;
  /** How long checkouts waited for a connection (0 when one was idle and fresh). */
  readonly acquireWait: Readonly<{ count: number; meanMillis: number; p50Millis: number; p90Millis: number; p99Millis: number; maxMillis: number }>;
  /** The last time no connection could be opened, and for how long. */
  readonly lastOutage: Readonly<{ startedAt: string; downMillis: number }> | undefined;
  /** The keepalive interval in force: the configured one, lowered below any idle limit found. */
  readonly keepaliveIntervalMillis: number;
  /** An idle age at which connections keep dying silently (a proxy or NAT idle timeout), once learned. */
  readonly learnedIdleKillMillis: number | undefined;
  /** The `pool.listen()` session, once one was started. */
  readonly listen?: ListenStats | undefined;
  /**
   * The monitor of silent statements in flight: checks run, checks the host did not answer in
   * time, connections cut off, and hosts declared unreachable.
   */
  readonly monitor: Readonly<{ checks: number; unanswered: number; cutOff: number; hostsDown: number }>;
}

// Upper bounds of the wait histogram's buckets, in milliseconds; the last is unbounded.
const WAIT_BOUNDS = [0, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, Infinity];

/** Counters behind {@link PoolStats}; plain fields so the hot path only increments. */
export class StatsRecorder {
  acquired = 0;
  lastOutage: { startedAt: string; downMillis: number } | undefined;
  readonly #waits = new Array<number>(WAIT_BOUNDS.length).fill(0);
  #waitSum = 0;
  #waitMax = 0;
  connects = 0;
  connectErrors = 0;
  validations = 0;
  failedValidations = 0;
  invalidations = 0;
  suspensions = 0;
  retries = 0;
  readonly commitResolutions = { committed: 0, aborted: 0, unknown: 0 };
  readonly monitor = { checks: 0, unanswered: 0, cutOff: 0, hostsDown: 0 };
  readonly #evictions = new Map<EvictionReason, number>();
  readonly #retriesByKind = new Map<FailureKind, number>();

  /** A checkout that waited `millis` for its connection. */
  acquiredAfter(millis: number): void {
    this.acquired++;
    if (millis === 0) {
      this.#waits[0] = (this.#waits[0] as number) + 1;
      return;
    }
    let i = 1;
    while (millis > (WAIT_BOUNDS[i] as number)) i++;
    this.#waits[i] = (this.#waits[i] as number) + 1;
    this.#waitSum += millis;
    if (millis > this.#waitMax) this.#waitMax = millis;
  }

  // A percentile as the upper bound of the bucket it falls in (capped by the largest wait seen).
  #percentile(fraction: number): number {
    const target = Math.ceil(this.acquired * fraction);
    let seen = 0;
    for (let i = 0; i < this.#waits.length; i++) {
      seen += this.#waits[i] as number;
      if (seen >= target && target > 0) return Math.min(WAIT_BOUNDS[i] as number, this.#waitMax);
    }
    return 0;
  }

  evicted(reason: EvictionReason): void {
    this.#evictions.set(reason, (this.#evictions.get(reason) ?? 0) + 1);
  }

  retried(kind: FailureKind): void {
    this.retries++;
    this.#retriesByKind.set(kind, (this.#retriesByKind.get(kind) ?? 0) + 1);
  }

  snapshot(
    sizes: { total: number; idle: number; active: number; waiting: number; max: number; min: number },
    tuning: { keepaliveIntervalMillis: number; learnedIdleKillMillis: number | undefined },
  ): PoolStats {
    const evictions = Object.fromEntries(REASONS.map((r) => [r, this.#evictions.get(r) ?? 0])) as Record<EvictionReason, number>;
    return Object.freeze({
      ...sizes,
      acquired: this.acquired,
      connects: this.connects,
      connectErrors: this.connectErrors,
      validations: this.validations,
      failedValidations: this.failedValidations,
      invalidations: this.invalidations,
      suspensions: this.suspensions,
      evictions: Object.freeze(evictions),
      retries: this.retries,
      retriesByKind: Object.freeze(Object.fromEntries(this.#retriesByKind)),
      commitResolutions: Object.freeze({ ...this.commitResolutions }),
      monitor: Object.freeze({ ...this.monitor }),
      acquireWait: Object.freeze({
        count: this.acquired,
        meanMillis: this.acquired === 0 ? 0 : this.#waitSum / this.acquired,
        p50Millis: this.#percentile(0.5),
        p90Millis: this.#percentile(0.9),
        p99Millis: this.#percentile(0.99),
        maxMillis: this.#waitMax,
      }),
      lastOutage: this.lastOutage === undefined ? undefined : Object.freeze({ ...this.lastOutage }),
      ...tuning,
    });
  }
}
