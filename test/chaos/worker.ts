/**
 * Chaos workload, run as a child process so a crash (pg.Pool's checked-out client dying with no
 * listener) is a real non-zero exit. Env: LIB (pg-lifeline | pg), CONN (JSON client config),
 * DURATION_MS, WORKERS, OP_DEADLINE_MS, IDLE_GAPS, TX_PAUSE, QUERY_TIMEOUT_MS, ID_PREFIX, CHAOS_LIFELINE,
 * CHAOS_POOL_OPTIONS (JSON merged into pg-lifeline's options only, for experiments).
 * Protocol: prints CHAOS-READY on stderr, starts on a `start` line on stdin, takes `fault-end`
 * lines while running, then prints one JSON report line on stdout and exits 0.
 */
import { randomUUID } from 'node:crypto';
import { writeSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { emptyReport, type Lib, type WorkerReport } from './report.js';
import { settleWithin } from '../harness/wait.js';
import { ACCOUNTS } from './reconcile.js';

const env = process.env;
// CHAOS_LIFELINE: another build of pg-lifeline to test (e.g. dist/index.js); default the source.
const lifeline: typeof import('../../src/index.js') = await import(env['CHAOS_LIFELINE'] ? pathToFileURL(env['CHAOS_LIFELINE']).href : '../../src/index.js');
const LIB = env['LIB'] as Lib;
if (LIB !== 'pg-lifeline' && LIB !== 'pg') throw new Error(`LIB must be pg-lifeline or pg, got ${String(LIB)}`);
const CONN = JSON.parse(env['CONN'] ?? '{}') as pg.ClientConfig;
const DURATION_MS = Number(env['DURATION_MS'] ?? 8000);
const WORKERS = Number(env['WORKERS'] ?? 16);
const OP_DEADLINE_MS = Number(env['OP_DEADLINE_MS'] ?? 15000);
const IDLE_GAPS = env['IDLE_GAPS'] === '1';
const TX_PAUSE = env['TX_PAUSE'] === '1';
const QUERY_TIMEOUT_MS = env['QUERY_TIMEOUT_MS'] ? Number(env['QUERY_TIMEOUT_MS']) : undefined;
// uuids of this worker start with it, so the suite can tell the two libraries' rows apart.
const ID_PREFIX = env['ID_PREFIX'] ?? (LIB === 'pg' ? 'bbbbbbbb' : 'a11fe11e');

const report: WorkerReport = emptyReport(LIB);
const errorCounts = new Map<string, { message: string; code: string; count: number }>();
const okBuckets: number[] = [];
const failBuckets: number[] = [];
const pendingSignals: number[] = []; // performance.now() of fault-end signals not yet followed by a success
let t0 = 0;
let printed = false;
let running = false;

// Counting only: for pg-lifeline a surviving uncaught exception is a defect to report; for pg a
// real crash must stay a crash, so pg gets no uncaughtException handler.
process.on('unhandledRejection', (reason) => {
  report.unhandled++;
  noteError(reason, 'unhandledRejection: ');
});
if (LIB === 'pg-lifeline') {
  process.on('uncaughtException', (error) => {
    report.unhandled++;
    noteError(error, 'uncaughtException: ');
  });
}
// A crashing process still reports what it saw until then (pipes are written synchronously).
process.on('exit', (code) => {
  if (printed) return;
  if (code !== 0) report.exitCode = code;
  printReport();
});

// The contract's pool surface, typed locally so this compiles before the retry work lands.
interface ChaosPool {
  query(config: { text: string; values: unknown[]; idempotent?: boolean }): Promise<pg.QueryResult>;
  query(text: string, values: unknown[]): Promise<pg.QueryResult>;
  transaction<T>(fn: (client: pg.PoolClient) => Promise<T>, options: { retry: boolean }): Promise<T>;
  connect(): Promise<pg.PoolClient>;
  end(): Promise<void>;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  stats?(): Record<string, unknown>;
}

const poolConfig = {
  ...CONN,
  max: 10,
  connectionTimeoutMillis: 10_000,
  application_name: `chaos-${LIB}`,
  ...(QUERY_TIMEOUT_MS === undefined ? {} : { query_timeout: QUERY_TIMEOUT_MS }),
};
const extra = LIB === 'pg-lifeline' ? (JSON.parse(env['CHAOS_POOL_OPTIONS'] ?? '{}') as object) : {};
const pool = (LIB === 'pg' ? new pg.Pool(poolConfig) : new lifeline.Pool({ ...poolConfig, ...extra })) as unknown as ChaosPool;
if (LIB === 'pg') pool.on('error', () => report.poolErrors++); // as pg's docs tell every app to
pool.on('retry', () => report.retryEvents++);

const exported = lifeline as unknown as Record<string, unknown>;
const isOutcomeUnknown =
  typeof exported['isOutcomeUnknown'] === 'function'
    ? (exported['isOutcomeUnknown'] as (err: unknown) => boolean)
    : (err: unknown) => ['PGL_OUTCOME_UNKNOWN', 'PGL_COMMIT_OUTCOME_UNKNOWN'].includes(String((err as { code?: unknown })?.code));

/** pg cannot tell whether a write whose connection died was applied: any connection-level error. */
function pgConnectionLevel(err: unknown): boolean {
  const e = err as { message?: unknown; code?: unknown } | null;
  const code = String(e?.code ?? '');
  return /terminat|Connection|ECONN|EPIPE|timeout|SSL|closed/i.test(String(e?.message ?? '')) || ['57P01', '57P02', '57P03'].includes(code) || code.startsWith('08');
}

function noteError(err: unknown, prefix = ''): void {
  const e = err as { message?: unknown; code?: unknown; name?: unknown } | null;
  const message = (prefix + String(e?.message ?? err).split('\n')[0])
    .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '<uuid>')
    .replace(/\d+/g, 'N')
    .slice(0, 200);
  const code = String(e?.code ?? e?.name ?? '');
  const key = `${code}|${message}`;
  const entry = errorCounts.get(key) ?? { message, code, count: 0 };
  entry.count++;
  errorCounts.set(key, entry);
}

const rand = (n: number): number => 1 + Math.floor(Math.random() * n);
const newId = (): string => ID_PREFIX + randomUUID().slice(8);
const bucket = (): number => Math.max(0, Math.floor((performance.now() - t0) / 500));

function countOutcome(ok: boolean): void {
  const b = bucket();
  const buckets = ok ? okBuckets : failBuckets;
  buckets[b] = (buckets[b] ?? 0) + 1;
  if (ok) {
    report.ok++;
    const at = performance.now();
    for (const signalled of pendingSignals.splice(0)) report.firstOkAfter.push(Math.round(at - signalled));
  } else {
    report.failed++;
  }
}

type Op = 'read' | 'upsert' | 'ledger' | 'transfer';

function pickOp(): Op {
  const r = Math.random();
  return r < 0.4 ? 'read' : r < 0.55 ? 'upsert' : r < 0.8 ? 'ledger' : 'transfer';
}

const READ = 'SELECT balance FROM accounts WHERE id = $1';
const UPSERT = 'INSERT INTO kv(k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v';
const LEDGER = 'INSERT INTO ledger(id, amount) VALUES ($1, $2)';
const DEBIT = 'UPDATE accounts SET balance = balance - 1 WHERE id = $1';
const CREDIT = 'UPDATE accounts SET balance = balance + 1 WHERE id = $1';
const LOG = 'INSERT INTO transfer_log(transfer_id) VALUES ($1)';
const PAUSE = 'SELECT pg_sleep(0.01)';

/** The transfer's statements; `phase` tells the pg path whether COMMIT was in flight when it failed. */
// Rows are locked in id order, as a real app does to avoid deadlocks: the suite injects
// connection faults, and a deadlock storm between its own loops would measure something else.
async function transferBody(client: pg.PoolClient, from: number, to: number, id: string): Promise<void> {
  const steps: [string, number][] = from < to ? [[DEBIT, from], [CREDIT, to]] : [[CREDIT, to], [DEBIT, from]];
  for (const [sql, account] of steps) {
    await client.query(sql, [account]);
    if (TX_PAUSE) await client.query(PAUSE);
  }
  await client.query(LOG, [id]);
}

async function pgTransfer(from: number, to: number, id: string, phase: { commit: boolean }): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await transferBody(client, from, to, id);
    phase.commit = true;
    await client.query('COMMIT');
  } catch (error) {
    client.release(error as Error); // destroys the connection, as pg's docs say to after an error
    throw error;
  }
  client.release();
}

/** Starts one op; resolves with how it ended. `hung` when the watchdog fired first. */
async function runOp(op: Op): Promise<void> {
  const lifelineLib = LIB === 'pg-lifeline';
  const id = newId();
  const phase = { commit: false };
  let work: Promise<unknown>;
  try {
    if (op === 'read') {
      const values = [rand(100)];
      work = lifelineLib ? pool.query({ text: READ, values, idempotent: true }) : pool.query(READ, values);
    } else if (op === 'upsert') {
      const values = [rand(1000), randomUUID()];
      work = lifelineLib ? pool.query({ text: UPSERT, values, idempotent: true }) : pool.query(UPSERT, values);
    } else if (op === 'ledger') {
      const values = [id, rand(100)];
      work = lifelineLib ? pool.query({ text: LEDGER, values }) : pool.query(LEDGER, values);
    } else {
      // Each library moves money within its own half of the accounts: a transaction of the other
      // library that hangs holding row locks must not block this one's statements, which wait on
      // the lock as any healthy statement would and which nothing should cut.
      const half = ACCOUNTS / 2;
      const base = lifelineLib ? 0 : half;
      const from = base + rand(half);
      let to = base + rand(half - 1);
      if (to >= from) to++; // two distinct accounts
      work = lifelineLib
        ? pool.transaction((client) => transferBody(client, from, to, id), { retry: true })
        : pgTransfer(from, to, id, phase);
    }
  } catch (error) {
    work = Promise.reject(error); // a synchronous throw is a failure like any other
  }

  const outcome = await settleWithin(work, OP_DEADLINE_MS);
  if (outcome === 'hung') {
    report.hung++;
    return;
  }
  if (outcome === 'ok') {
    countOutcome(true);
    if (op === 'ledger') report.acked.push(id);
    if (op === 'transfer') report.transfersAcked.push(id);
    return;
  }
  const { error } = outcome;
  countOutcome(false);
  noteError(error);
  if (op !== 'ledger') report.retrySafeFailures++;
  if (op !== 'ledger' && op !== 'transfer') return;
  const unknown = lifelineLib ? isOutcomeUnknown(error) : pgConnectionLevel(error) && (op === 'ledger' || phase.commit);
  if (unknown) report.unknownOutcome++;
  if (op === 'ledger') (unknown ? report.unknown : report.definiteFailed).push(id);
  else (unknown ? report.transfersUnknown : report.transfersDefiniteFailed).push(id);
}

async function loop(): Promise<void> {
  while (running) {
    await runOp(pickOp());
    if (IDLE_GAPS && running) await delay(800 + Math.random() * 800);
  }
}

function printReport(): void {
  printed = true;
  report.errorSamples = [...errorCounts.values()].sort((a, b) => b.count - a.count).slice(0, 5);
  const buckets = Math.max(okBuckets.length, failBuckets.length);
  report.timeline = Array.from({ length: buckets }, (_, i) => [i / 2, okBuckets[i] ?? 0, failBuckets[i] ?? 0]);
  report.recoveryMissed = pendingSignals.length;
  const retries = pool.stats?.()['retries'];
  report.retries = typeof retries === 'number' ? retries : null;
  writeAllSync(1, Buffer.from(`${JSON.stringify(report)}\n`));
}

/** writeSync may write only part of a large buffer to a pipe (or hit EAGAIN on a non-blocking one). */
function writeAllSync(fd: number, data: Buffer): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let offset = 0; offset < data.length; ) {
    try {
      offset += writeSync(fd, data, offset);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error;
      Atomics.wait(pause, 0, 0, 5); // the reader is behind; nothing async may run here (exit hook)
    }
  }
}

async function main(): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  const started = new Promise<void>((resolve) => {
    lines.on('line', (line) => {
      if (line.trim() === 'start') resolve();
      else if (line.trim() === 'fault-end' && running) pendingSignals.push(performance.now());
    });
  });
  process.stderr.write('CHAOS-READY\n');
  await started;
  t0 = performance.now();
  running = true;
  const loops = Array.from({ length: WORKERS }, () => loop());
  await delay(DURATION_MS);
  running = false;
  await Promise.all(loops); // each op is bounded by its watchdog, so this is too
  // pg.Pool's end() waits for ever on a client that is still checked out.
  await Promise.race([pool.end().catch(() => undefined), delay(5000)]);
  printReport();
  process.exit(0);
}

await main();
