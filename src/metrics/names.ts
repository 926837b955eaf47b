import type { PoolStats } from '../stats.js';

/**
 * What the metrics exporters need from a pool: a `Pool` fits. Structural, so the exporters
 * depend on no pool internals, and tests can feed them anything with `stats()`.
 */
export interface MetricsPool {
  stats(): PoolStats;
  /** The pool emits `checkout` only while someone listens, so subscribing is the opt-in. */
  on(event: 'checkout', listener: (event: { readonly waitMillis: number }) => void): unknown;
  off(event: 'checkout', listener: (event: { readonly waitMillis: number }) => void): unknown;
}

/** Returned by the exporters. */
export interface MetricsHandle {
  /** Stops exporting the pool (see each exporter for what remains). Idempotent. */
  close(): void;
}

/**
 * One metric read from `pool.stats()` at collection time. `name` is dotted (OpenTelemetry style);
 * Prometheus gets it with `_` for `.` and `_total` on counters, the name the OpenTelemetry
 * spec's Prometheus mapping derives too, so dashboards can work with either path.
 */
export interface StatMetric {
  readonly name: string;
  readonly help: string;
  /** UCUM annotation for OpenTelemetry; dropped by Prometheus naming. */
  readonly unit: string;
  /** `gauge`: a size that goes up and down. `counter`: only grows while the pool lives. */
  readonly kind: 'gauge' | 'counter';
  /** Set when `read` returns one value per label value (eviction reason, retry kind...). */
  readonly label?: string;
  readonly read: (stats: PoolStats) => number | Readonly<Partial<Record<string, number>>>;
}

/** Every metric read from `pool.stats()`, in exposition order. */
export const STAT_METRICS: readonly StatMetric[] = [
  { name: 'connections', kind: 'gauge', unit: '{connection}', help: 'Open connections plus those being opened.', read: (s) => s.total },
  { name: 'connections.idle', kind: 'gauge', unit: '{connection}', help: 'Connections idle in the pool.', read: (s) => s.idle },
  { name: 'connections.active', kind: 'gauge', unit: '{connection}', help: 'Connections checked out, or busy with a keepalive ping or a rollback.', read: (s) => s.active },
  { name: 'connections.max', kind: 'gauge', unit: '{connection}', help: 'The max option: most connections the pool opens.', read: (s) => s.max },
  { name: 'connections.min', kind: 'gauge', unit: '{connection}', help: 'The min option: connections kept open.', read: (s) => s.min },
  { name: 'waiting', kind: 'gauge', unit: '{request}', help: 'Callers waiting for a connection.', read: (s) => s.waiting },
  { name: 'keepalive_interval_seconds', kind: 'gauge', unit: 's', help: 'Keepalive interval in force, tuned below any idle limit found.', read: (s) => s.keepaliveIntervalMillis / 1000 },
  { name: 'learned_idle_kill_seconds', kind: 'gauge', unit: 's', help: 'Idle age at which connections keep dying silently (a proxy or NAT timeout); 0 until learned.', read: (s) => (s.learnedIdleKillMillis ?? 0) / 1000 },
  { name: 'last_outage_seconds', kind: 'gauge', unit: 's', help: 'How long the last outage (no connection could be opened) lasted; 0 if none.', read: (s) => (s.lastOutage?.downMillis ?? 0) / 1000 },
  { name: 'acquired', kind: 'counter', unit: '{checkout}', help: 'Successful checkouts, through connect() and query() alike.', read: (s) => s.acquired },
  { name: 'connects', kind: 'counter', unit: '{connection}', help: 'Connections opened.', read: (s) => s.connects },
  { name: 'connect_errors', kind: 'counter', unit: '{attempt}', help: 'Connect attempts that failed.', read: (s) => s.connectErrors },
  { name: 'validations', kind: 'counter', unit: '{probe}', help: 'Checkout and keepalive probes run.', read: (s) => s.validations },
  { name: 'failed_validations', kind: 'counter', unit: '{probe}', help: 'Probes that found a dead connection.', read: (s) => s.failedValidations },
  { name: 'invalidations', kind: 'counter', unit: '{event}', help: 'Server-wide failures that made every older connection suspect.', read: (s) => s.invalidations },
  { name: 'suspensions', kind: 'counter', unit: '{event}', help: 'Times the process was found to have been frozen or stalled.', read: (s) => s.suspensions },
  { name: 'evictions', kind: 'counter', unit: '{connection}', label: 'reason', help: 'Connections the pool closed, by reason.', read: (s) => s.evictions },
  // Only kinds seen so far: a kind's series starts with its first retry. Their sum is `retries`.
  { name: 'retries', kind: 'counter', unit: '{retry}', label: 'kind', help: 'Statements and transactions tried again, by the kind of failure.', read: (s) => s.retriesByKind },
  { name: 'commit_resolutions', kind: 'counter', unit: '{transaction}', label: 'outcome', help: 'Connections lost during COMMIT, by what the pool then found out.', read: (s) => s.commitResolutions },
  { name: 'monitor', kind: 'counter', unit: '{event}', label: 'event', help: 'The monitor of silent statements in flight: checks, checks unanswered, connections cut off, hosts declared down.', read: (s) => s.monitor },
  // pool.listen(): all 0 until the first listener starts the session.
  { name: 'listen.listeners', kind: 'gauge', unit: '{listener}', help: 'Open pool.listen() listeners.', read: (s) => s.listen?.listeners ?? 0 },
  { name: 'listen.channels', kind: 'gauge', unit: '{channel}', help: 'Channels the LISTEN session listens to.', read: (s) => s.listen?.channels ?? 0 },
  { name: 'listen.up', kind: 'gauge', unit: '1', help: '1 while the LISTEN session listens to every channel, 0 while it is down or reconnecting (or not started).', read: (s) => (s.listen?.state === 'listening' ? 1 : 0) },
  { name: 'listen.last_downtime_seconds', kind: 'gauge', unit: 's', help: 'How long the LISTEN session was last down (notifications sent then may be lost); 0 if never.', read: (s) => (s.listen?.lastDowntimeMillis ?? 0) / 1000 },
  { name: 'listen.reconnects', kind: 'counter', unit: '{reconnect}', help: 'Times the LISTEN session was lost and listened again.', read: (s) => s.listen?.reconnects ?? 0 },
];

/** The acquire wait histogram, fed by the pool's `checkout` event. */
export const ACQUIRE_WAIT = { name: 'acquire_wait', unit: 's', help: 'Time a checkout waited for a connection, probes included.' } as const;

/**
 * Acquire wait buckets in seconds, 0.1 ms to 10 s: an idle connection is handed out in
 * microseconds, a probe or a new connection takes milliseconds, exhaustion or an outage seconds.
 */
export const ACQUIRE_WAIT_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Label names the exporters use themselves, so constant labels must not take them. */
export const RESERVED_LABELS: ReadonlySet<string> = new Set([...STAT_METRICS.flatMap((m) => (m.label === undefined ? [] : [m.label])), 'le']);

/** A key identifying a set of constant labels, whatever the order of its keys. */
export function labelSetKey(labels: Readonly<Record<string, unknown>>): string {
  return JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** Rejects constant labels that would collide with the exporters' own. */
export function checkConstantLabels(labels: Readonly<Record<string, unknown>>, what: string): void {
  for (const name of Object.keys(labels)) {
    if (RESERVED_LABELS.has(name)) throw new TypeError(`pg-lifeline metrics: the ${what} '${name}' is used by the exporter itself; choose another name`);
  }
}
