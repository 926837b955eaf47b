/**
 * The demo workload for one library, run in its own child process (the CLI re-runs itself with
 * WORKER_ENV set) so pg.Pool's crash on an unlistened client error is a real crash of that process.
 * stdin takes `idle on` and `idle off` lines; stdout carries `P <ok> <errors>` progress
 * lines and, last, one JSON WorkerReport line, written synchronously so a dying process still sends it.
 */
import { randomUUID } from 'node:crypto';
import { writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import * as pg from 'pg';
import { Pool } from '../index.js';
import { isOutcomeUnknown, LifelineError, unwrap } from '../errors.js';
import { ACCOUNTS, TABLES, TICK_MS, type ErrorOutcome, type Lib, type WorkerConfig, type WorkerReport } from './model.js';
import { settleWithin } from '../throwaway/wait.js';
import { listenFor } from './listen.js';

export const WORKER_ENV = 'PG_LIFELINE_DEMO_WORKER';
/**
 * An op still pending after this counts as hung. Past pg-lifeline's own bound on a dead network
 * (monitorGraceMillis 2 s + monitorDetectionMillis 10 s, by default), so only an op that would
 * wait for ever counts.
 */
export const OP_DEADLINE_MS = 20_000;
/** pg.Pool's and its listener's connectionTimeoutMillis (pg's default, 0, waits for ever). */
export const PG_CONNECT_TIMEOUT_MS = 5_000;

interface DemoPool {
  query(config: { text: string; values: unknown[]; idempotent?: boolean }): Promise<pg.QueryResult>;
  connect(): Promise<pg.PoolClient>;
  end(): Promise<void>;
  on(event: 'error', listener: () => void): unknown;
}

export async function runWorker(config: WorkerConfig): Promise<number> {
  const report: WorkerReport = { lib: config.lib, ok: [], errors: [], okTicks: [], hungAt: [], acked: [], errorKinds: {}, errorsAt: [], heard: [], told: [] };
  const okTicks = new Set<number>();
  let printed = false;
  const print = (): void => {
    if (printed) return;
    printed = true;
    report.okTicks = [...okTicks].sort((a, b) => a - b);
    // A listener's window ends with its process: after a crash, the next process's listener is another.
    const exitedAt = Date.now() - config.t0;
    for (const window of report.told) if (window[1] === null) window[1] = exitedAt;
    writeLine(JSON.stringify(report));
  };
  // A crash still sends what was seen until then.
  process.on('exit', print);
  if (config.lib === 'pg-lifeline') process.on('uncaughtException', (error) => noteError(report, Date.now() - config.t0, error, 'uncaught: '));

  // pg-lifeline as its README tells users: defaults, no query_timeout (they bound a dead network).
  // pg.Pool as its docs advise: a connectionTimeoutMillis, so a connect fails rather than waits for ever.
  const application_name = `${config.appPrefix}${config.lib}`;
  const pool: DemoPool =
    config.lib === 'pg'
      ? (new pg.Pool({ ...config.conn, max: config.workers, connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS, application_name }) as DemoPool)
      : (new Pool({ ...config.conn, max: config.workers, application_name }) as unknown as DemoPool);
  // As pg's docs tell every app to; pg-lifeline needs no listener.
  if (config.lib === 'pg') pool.on('error', () => {});

  let idle = false;
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'idle on') idle = true;
    else if (line === 'idle off') idle = false;
  }).on('close', () => process.exit(1)); // the demo is gone: stop rather than run on unwatched

  const second = (): number => Math.max(0, Math.floor((Date.now() - config.t0) / 1000));
  const count = (series: Array<number | null>): void => {
    const s = second();
    series[s] = (series[s] ?? 0) + 1;
  };
  let ok = 0;
  let errors = 0;
  const progress = setInterval(() => writeLine(`P ${ok} ${errors}`), 250);

  const accounts = ACCOUNTS[config.lib];
  const runOp = async (): Promise<void> => {
    const id = config.idPrefix + randomUUID().slice(8);
    const startedAt = Date.now() - config.t0;
    const r = Math.random();
    const kind = r < 0.5 ? 'read' : r < 0.8 ? 'ledger' : 'transfer';
    const work =
      kind === 'read'
        ? pool.query({ text: `SELECT balance FROM ${TABLES.accounts} WHERE id = $1`, values: [accounts.first + Math.floor(Math.random() * accounts.count)], idempotent: true })
        : kind === 'ledger'
          ? pool.query({ text: `INSERT INTO ${TABLES.ledger}(id) VALUES ($1)`, values: [id] })
          : transfer(pool, config.lib, id);
    const outcome = await settleWithin(work, OP_DEADLINE_MS);
    if (outcome === 'hung') {
      report.hungAt.push(startedAt);
    } else if (outcome === 'ok') {
      ok++;
      count(report.ok);
      okTicks.add(Math.floor((Date.now() - config.t0) / TICK_MS));
      if (kind !== 'read') report.acked.push(id);
    } else {
      errors++;
      count(report.errors);
      noteError(report, startedAt, outcome.error);
    }
  };

  // pg.Pool's app listens on a Client of its own, killed with the pool's sessions by pg_terminate_backend.
  const listenConn = { ...config.conn, connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS, application_name: `${config.appPrefix}pg-listen` };
  const heard = await listenFor(config.lib, pool, listenConn, config.t0);
  report.heard = heard.at;
  report.told = heard.told;
  if (heard.error !== undefined) report.listenError = heard.error;
  await delay(Math.max(0, config.t0 - Date.now())); // both libraries start together
  const loop = async (): Promise<void> => {
    while (Date.now() < config.endAt) {
      // An idle gap: no work, so idle_session_timeout ends the sessions that wait in the pool.
      if (idle) await delay(20);
      else {
        await runOp();
        await delay(5);
      }
    }
  };
  await Promise.all(Array.from({ length: config.workers }, loop)); // each op is bounded by its watchdog
  clearInterval(progress);
  // pg.Pool's end() waits for ever on a client that is still checked out.
  await Promise.race([heard.close().then(() => pool.end()).catch(() => undefined), delay(3_000)]);
  writeLine(`P ${ok} ${errors}`);
  print();
  return 0;
}

/** BEGIN, two updates with a pause between them (a window for the connection to die), a log row, COMMIT. */
async function transfer(pool: DemoPool, lib: Lib, id: string): Promise<void> {
  const { first, count } = ACCOUNTS[lib];
  const half = Math.floor(count / 2);
  const from = first + Math.floor(Math.random() * half);
  const to = first + half + Math.floor(Math.random() * (count - half)); // locked in id order: no deadlocks of our own
  const body = async (client: pg.PoolClient): Promise<void> => {
    await client.query(`UPDATE ${TABLES.accounts} SET balance = balance - 1 WHERE id = $1`, [from]);
    await client.query('SELECT pg_sleep(0.01)');
    await client.query(`UPDATE ${TABLES.accounts} SET balance = balance + 1 WHERE id = $1`, [to]);
    await client.query(`INSERT INTO ${TABLES.ledger}(id) VALUES ($1)`, [id]);
  };
  if (lib === 'pg-lifeline') {
    await (pool as unknown as Pool).transaction(body, { retry: true });
    return;
  }
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await body(client);
    await client.query('COMMIT');
  } catch (error) {
    client.release(error as Error); // destroys the connection, as pg's docs say to after an error
    throw error;
  }
  client.release();
}

/** What the error tells the app about its work; pg.Pool's errors do not say. */
export function outcomeOf(error: unknown): ErrorOutcome {
  if (isOutcomeUnknown(error)) return 'unknown';
  // Every other failure pg-lifeline raises for a statement means it did not take effect.
  return (error as { outcome?: unknown } | null)?.outcome === 'not-applied' || unwrap(error) instanceof LifelineError ? 'not-applied' : 'other';
}

function noteError(report: WorkerReport, startedAt: number, error: unknown, prefix = ''): void {
  const e = error as { code?: unknown; lifelineCode?: unknown; message?: unknown; diagnosis?: { cause?: unknown } } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const lifelineCode = typeof e?.lifelineCode === 'string' && e.lifelineCode !== code ? e.lifelineCode : undefined;
  const cause = typeof e?.diagnosis?.cause === 'string' ? e.diagnosis.cause : undefined;
  const message = `${prefix}${String(e?.message ?? error).split('\n')[0] ?? ''}`;
  const outcome = outcomeOf(error);
  // Without a code, the message's first sentence names the kind; its numbers vary per error.
  const key = [outcome, code, lifelineCode ?? '', cause ?? '', code ? prefix : (message.split(/[.:]\s/)[0] ?? '').replace(/\d+/g, '#')].join('|');
  const kind = report.errorKinds[key];
  if (kind) kind.count++;
  else report.errorKinds[key] = { outcome, code, ...(lifelineCode ? { lifelineCode } : {}), ...(cause ? { cause } : {}), example: message, count: 1 };
  report.errorsAt.push([startedAt, key]);
}

/** writeSync may write only part of a line to a pipe, or hit EAGAIN while the parent is behind. */
function writeLine(line: string): void {
  const data = Buffer.from(`${line}\n`);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let offset = 0; offset < data.length; ) {
    try {
      offset += writeSync(1, data, offset);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EPIPE') return; // the parent is gone
      if (code !== 'EAGAIN') throw error;
      Atomics.wait(pause, 0, 0, 5);
    }
  }
}
