// What the demo's parent and its workers share: the libraries, the tables, the worker protocol's types.
import type * as pg from 'pg';

export type Lib = 'pg' | 'pg-lifeline';
export const LIBS: Lib[] = ['pg', 'pg-lifeline'];
export const LABEL: Record<Lib, string> = { pg: 'pg.Pool', 'pg-lifeline': 'pg-lifeline' };
/** uuids of each library's rows start with it, so reconciling can tell them apart. */
export const ID_PREFIX: Record<Lib, string> = { pg: 'bbbbbbbb', 'pg-lifeline': 'a11fe11e' };
/**
 * Each library moves money only between its own accounts: a transaction of one library left
 * hanging in a blackhole keeps its row locks, and must not block the other library's work.
 */
export const ACCOUNTS: Record<Lib, { first: number; count: number }> = { pg: { first: 1, count: 50 }, 'pg-lifeline': { first: 51, count: 50 } };

// Prefixed, so a --url server's own tables are never touched.
export const TABLES = { accounts: 'pg_lifeline_demo_accounts', ledger: 'pg_lifeline_demo_ledger' } as const;

/** Resolution of the success times a worker reports, for "time to first success". */
export const TICK_MS = 10;

/** What the parent tells a worker, through WORKER_ENV. */
export interface WorkerConfig {
  lib: Lib;
  conn: pg.ClientConfig;
  /** Epoch ms of the workload's start (1 s buckets count from it) and end. */
  t0: number;
  endAt: number;
  workers: number;
  idPrefix: string;
  appPrefix: string;
}

/** What an error told the app: that the work may have taken effect, that it did not, or nothing. */
export type ErrorOutcome = 'unknown' | 'not-applied' | 'other';

/** One kind of error: the same outcome, code and cause. */
export interface ErrorKind {
  outcome: ErrorOutcome;
  /** The error's `code` as it came (SQLSTATE, errno, or pg-lifeline's own), or '' without one. */
  code: string;
  /** pg-lifeline's `lifelineCode`, when it differs from `code`. */
  lifelineCode?: string;
  /** pg-lifeline's `diagnosis.cause`, when it gives one. */
  cause?: string;
  /** The first such error's message, whole. */
  example: string;
  count: number;
}

/**
 * A window in which the listener told the app it may lose notifications, as [from, to] in ms from t0;
 * to is null while it is still open; the worker closes it when it exits. pg-lifeline: `disconnected`'s `since` to `reconnected`.
 * pg.Client: the `error` or `end` event to the next successful LISTEN.
 */
export type ToldWindow = [number, number | null];

/** What a worker sends back, last thing before it exits. */
export interface WorkerReport {
  lib: Lib;
  /** Successes and errors per 1 s bucket from t0 (sparse). */
  ok: Array<number | null>;
  errors: Array<number | null>;
  /** Distinct TICK_MS ticks from t0 at which an op succeeded, ascending. */
  okTicks: number[];
  /** Start (ms from t0) of each op still pending when its watchdog fired. */
  hungAt: number[];
  /** Ids of writes the library acknowledged (ledger inserts and transfers). */
  acked: string[];
  /** Keyed by kind (see errorKey). */
  errorKinds: Record<string, ErrorKind>;
  /** Each error as [start ms from t0, kind key]. */
  errorsAt: Array<[number, string]>;
  /** Payloads (send times, ms from t0) the LISTEN lane's listener received. */
  heard: number[];
  /** The loss windows the listener told the app of. */
  told: ToldWindow[];
  /** Why the listener could not listen at all. */
  listenError?: string;
}

/** A stretch inside a fault window (e.g. an idle gap), in seconds from t0. */
export interface Span {
  start: number;
  end?: number;
}

/** A fault window, in seconds from t0; `end` is unset while it lasts. */
export interface FaultWindow extends Span {
  label: string;
  /** Idle gaps: no work on purpose, so the server's idle timeout ends the sessions. */
  gaps?: Span[];
}

/** One library's run, every incarnation of its worker merged. */
export interface LibSummary {
  lib: Lib;
  ok: number;
  errors: number;
  lostWrites: number;
  crashes: number;
  hung: number;
  recoveryMs: number | null;
  opsPerSecond: number;
  okSeries: number[];
  errorSeries: number[];
  /** Every incarnation's reports merged. */
  okTicks: number[];
  hungAt: number[];
  crashAt: number[];
  errorKinds: Record<string, ErrorKind>;
  errorsAt: Array<[number, string]>;
  heard: number[];
  told: ToldWindow[];
  listenErrors: string[];
}

/** Everything the report shows. */
export interface DemoResult {
  seconds: number;
  /** The LISTEN lane's notifications, as [sent, acknowledged] in ms from t0; the payload is the send time. */
  sent: Array<[number, number]>;
  server: string;
  windows: FaultWindow[];
  skipped: string[];
  libs: LibSummary[];
}
