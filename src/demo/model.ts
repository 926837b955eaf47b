// What the demo's parent and its workers share: the libraries, the tables, the worker protocol's types.
import type * as pg from 'pg';

export type Lib = 'pg' | 'pg-lifeline';
export const LIBS: Lib[] = ['pg', 'pg-lifeline'];
export const LABEL: Record<Lib, string> = { pg: 'pg.Pool', 'pg-lifeline': 'pg-lifeline' };
/** uuids of each library's rows start with it, so reconciling can tell them apart. */
export const ID_PREFIX: Record<Lib, string> = { pg: 'bbbbbbbb', 'pg-lifeline': 'a11fe11e' };

// Prefixed, so a --url server's own tables are never touched.
export const TABLES = { accounts: 'pg_lifeline_demo_accounts', ledger: 'pg_lifeline_demo_ledger' } as const;

export interface WorkerConfig {
  lib: Lib;
  conn: pg.ClientConfig;
  /** Epoch ms of the workload's start (1 s buckets count from it) and end. */
  t0: number;
  endAt: number;
  workers: number;
  queryTimeoutMs: number;
  idPrefix: string;
  appPrefix: string;
}

export interface WorkerReport {
  lib: Lib;
  /** Successes and errors per 1 s bucket from t0 (sparse). */
  ok: Array<number | null>;
  errors: Array<number | null>;
  /** Ops still pending when their watchdog fired. */
  hung: number;
  /** Ids of writes the library acknowledged (ledger inserts and transfers). */
  acked: string[];
  /** Per fault-end signal: ms until the next success. */
  recoveries: number[];
  errorKinds: Record<string, number>;
}

/** A fault window, in seconds from t0; `end` is unset while it lasts. */
export interface FaultWindow {
  label: string;
  start: number;
  end?: number;
}

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
  errorKinds: Record<string, number>;
}

export interface DemoResult {
  seconds: number;
  server: string;
  windows: FaultWindow[];
  skipped: string[];
  libs: LibSummary[];
}
