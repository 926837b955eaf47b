// The report's figures as JSON (`pg-lifeline demo --json FILE`), for CI and for users who check
// them. The shape is documented in docs/demo-json.md; `version` changes when it does.
import { errorGroups, faultRows, headline, listenerAlive, listenTotals, type FaultRow } from './breakdown.js';
import { CLIENT_RECONNECT_MS } from './listen.js';
import { LABEL, type DemoResult, type ErrorKind, type Lib, type LibSummary } from './model.js';

/** Bumped whenever a field is removed or changes meaning. */
const JSON_VERSION = 1;

/** How each library is configured in the demo, as the report says it. */
export const CONFIGURATIONS: Record<Lib, string> = {
  pg:
    'pg.Pool as its docs advise: max 8, application_name, the connection settings, a pool error listener, and connectionTimeoutMillis 5000 ' +
    '(pg waits for ever by default; its docs advise a timeout); transactions release a failed client with the error, so it is destroyed. ' +
    `LISTEN on a plain pg.Client (connectionTimeoutMillis 5000) that reconnects ${CLIENT_RECONNECT_MS / 1000} s after each 'error' or 'end', with no limit`,
  'pg-lifeline':
    'pg-lifeline with default options, as its README tells users: only max 8, application_name and the connection settings; ' +
    'no error listener, no query_timeout, default connectionTimeoutMillis; reads marked idempotent; transactions with retry: true; LISTEN through pool.listen()',
};

/** One library's totals, as the summary has them, with its configuration and error kinds. */
export type LibraryJson = Pick<LibSummary, 'ok' | 'errors' | 'lostWrites' | 'crashes' | 'hung' | 'recoveryMs' | 'opsPerSecond'> & {
  library: string;
  configuration: string;
  listenerAliveAtEnd: boolean | null;
  /** The LISTEN lane over the whole run: sent, delivered, lost, and lost ones the app was told of. */
  listen: ReturnType<typeof listenTotals>;
  /** The loss windows the listener told the app of, in seconds from the start (see ToldWindow). */
  listenWindows: Array<{ from: number; to: number | null }>;
  /** Errors by code and cause, each with one full example message. */
  errorKinds: ErrorKind[];
  /** ok and error counts per second of the run. */
  okPerSecond: number[];
  errorsPerSecond: number[];
};

/** Everything the report shows, per library and per fault. */
export interface DemoJson {
  version: number;
  generatedAt: string;
  seconds: number;
  server: string;
  headline: string;
  /** Faults the run could not play, each as "<fault>: skipped, <why>" (a server given with --url cannot be restarted). */
  skipped: string[];
  libraries: LibraryJson[];
  /** The per-fault table: one row per fault window (and one for ops outside them). */
  faults: FaultRow[];
  windows: DemoResult['windows'];
}

/** The JSON document for `result`. */
export function demoJson(result: DemoResult, generatedAt: Date): DemoJson {
  return {
    version: JSON_VERSION,
    generatedAt: generatedAt.toISOString(),
    seconds: result.seconds,
    server: result.server,
    headline: headline(result.libs, result.sent, result.seconds),
    skipped: result.skipped,
    libraries: result.libs.map((lib) => ({
      library: LABEL[lib.lib],
      configuration: CONFIGURATIONS[lib.lib],
      ok: lib.ok,
      errors: lib.errors,
      lostWrites: lib.lostWrites,
      crashes: lib.crashes,
      hung: lib.hung,
      recoveryMs: lib.recoveryMs,
      opsPerSecond: lib.opsPerSecond,
      listenerAliveAtEnd: listenerAlive(lib, result.sent, result.seconds),
      listen: listenTotals(lib, result.sent),
      listenWindows: lib.told.map(([from, to]) => ({ from: from / 1000, to: to === null ? null : to / 1000 })),
      errorKinds: errorGroups(lib),
      okPerSecond: lib.okSeries,
      errorsPerSecond: lib.errorSeries,
    })),
    faults: faultRows(result),
    windows: result.windows,
  };
}
