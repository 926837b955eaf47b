import type { FailureKind } from './postgres/classify.js';

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
}

/** Counters behind {@link PoolStats}; plain fields so the hot path only increments. */
export class StatsRecorder {
  acquired = 0;
  connects = 0;
  connectErrors = 0;
  validations = 0;
  failedValidations = 0;
  invalidations = 0;
  suspensions = 0;
  retries = 0;
  readonly commitResolutions = { committed: 0, aborted: 0, unknown: 0 };
  readonly #evictions = new Map<EvictionReason, number>();
  readonly #retriesByKind = new Map<FailureKind, number>();

  evicted(reason: EvictionReason): void {
    this.#evictions.set(reason, (this.#evictions.get(reason) ?? 0) + 1);
  }

  retried(kind: FailureKind): void {
    this.retries++;
    this.#retriesByKind.set(kind, (this.#retriesByKind.get(kind) ?? 0) + 1);
  }

  snapshot(sizes: { total: number; idle: number; active: number; waiting: number; max: number; min: number }): PoolStats {
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
    });
  }
}
