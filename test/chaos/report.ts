/** The one JSON line a chaos worker prints on stdout, and what the suite derives from it. */

export type Lib = 'pg-lifeline' | 'pg';

export interface ErrorSample {
  message: string;
  code: string;
  count: number;
}

export interface WorkerReport {
  lib: Lib;
  ok: number;
  failed: number;
  /** Failures of reads, idempotent upserts and transfers: work the pool may retry safely. */
  retrySafeFailures: number;
  unknownOutcome: number;
  /** Ops still pending when their watchdog (OP_DEADLINE_MS) fired. */
  hung: number;
  /** unhandledRejection (both libs) and survived uncaughtException (pg-lifeline only) events. */
  unhandled: number;
  acked: string[];
  definiteFailed: string[];
  unknown: string[];
  transfersAcked: string[];
  transfersDefiniteFailed: string[];
  transfersUnknown: string[];
  errorSamples: ErrorSample[];
  /** Per fault-end signal: ms until the first successful op after it. */
  firstOkAfter: number[];
  /** Fault-end signals that no success followed before the run ended. */
  recoveryMissed: number;
  /** [tSec, ok, failed] per 500 ms bucket from the start of the workload. */
  timeline: Array<[number, number, number]>;
  /** pool.stats().retries where the pool has it (pg-lifeline), plus `retry` events seen. */
  retries: number | null;
  retryEvents: number;
  /** pg.Pool `error` events (the pg worker listens, as pg's docs tell apps to). */
  poolErrors: number;
  /** Set when the report was written from the exit hook of a process that is dying. */
  exitCode?: number;
}

/** One library's result for one scenario, after reconciling with the database. */
export interface LibResult {
  report: WorkerReport;
  /** False when no report line could be read: every count below is then meaningless. */
  reported: boolean;
  crashed: boolean;
  exit: string;
  stderrSummary: string;
  ackedMissing: string[];
  presentButFailed: string[];
  appliedTwice: string[];
  /** Outcome-unknown ledger ids / transfers that did land, of all unknown ones. */
  unknownLanded: number;
  recoveryMs: number | null;
}

export interface ScenarioResult {
  name: string;
  seconds: number;
  balanceSum: number;
  libs: Record<Lib, LibResult>;
}

export function emptyReport(lib: Lib): WorkerReport {
  return {
    lib,
    ok: 0,
    failed: 0,
    retrySafeFailures: 0,
    unknownOutcome: 0,
    hung: 0,
    unhandled: 0,
    acked: [],
    definiteFailed: [],
    unknown: [],
    transfersAcked: [],
    transfersDefiniteFailed: [],
    transfersUnknown: [],
    errorSamples: [],
    firstOkAfter: [],
    recoveryMissed: 0,
    timeline: [],
    retries: null,
    retryEvents: 0,
    poolErrors: 0,
  };
}

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : Math.round(((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2);
}
