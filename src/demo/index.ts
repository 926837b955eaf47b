// `pg-lifeline demo`: pg.Pool and pg-lifeline side by side while a fault script plays.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError } from '../doctor/args.js';
import { onProcessExit } from '../throwaway/exit-hooks.js';
import { FaultProxy } from '../throwaway/proxy.js';
import { killAllWorkers, Supervisor } from './children.js';
import { playFaults, type FaultContext } from './faults.js';
import { renderHtml } from './html.js';
import { CONFIGURATIONS, demoJson } from './json.js';
import { ID_PREFIX, LABEL, LIBS, type DemoResult, type FaultWindow, type WorkerConfig } from './model.js';
import { findServerBinaries, ServerBinariesNotFoundError } from '../throwaway/binaries.js';
import { createTables, dropTables, startThrowaway, urlTarget, type Target } from './server.js';
import { errorText, faultRows, faultTextTable, headline } from './breakdown.js';
import { summarize, textTable } from './summary.js';
import { LISTEN_NOTE, startPublisher } from './listen.js';
import { runWorker, WORKER_ENV } from './worker.js';

export const DEMO_USAGE = `Usage: pg-lifeline demo [options]

Runs one workload through plain pg.Pool and through pg-lifeline side by side, each in its own
process, while faults play: idle sessions ended by the server, backends terminated, a restart, a
crash, a network blackhole and connection resets. Prints a table and writes an HTML report.

Options:
  --url <url>       use this server instead of a throwaway one (restart, crash and idle timeout are skipped)
  --seconds <n>     length of the run, 20 to 300 (default 90)
  --report <path>   where to write the HTML report (default ./pg-lifeline-demo.html)
  --json <path>     also write every figure of the report as JSON (shape: docs/demo-json.md)
  --no-open         do not open the report in a browser
  -h, --help        show this help
`;

const WORKERS = 8;
/** Workers start loading now and begin the workload together at t0. */
const STARTUP_MS = 2_500;
const APP_PREFIX = 'pg-lifeline-demo-';

interface DemoArgs {
  url?: string;
  seconds: number;
  report: string;
  json?: string;
  open: boolean;
}

function parseDemoArgs(argv: string[]): DemoArgs | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { url: { type: 'string' }, seconds: { type: 'string' }, report: { type: 'string' }, json: { type: 'string' }, 'no-open': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message.split('. ')[0] ?? String(error));
  }
  if (values.help) return 'help';
  const seconds = Number(values.seconds ?? 90);
  if (!Number.isInteger(seconds) || seconds < 20 || seconds > 300) throw new UsageError(`--seconds must be a whole number from 20 to 300, not ${JSON.stringify(values.seconds)}`);
  return {
    ...(values.url ? { url: values.url } : {}),
    ...(values.json ? { json: path.resolve(values.json) } : {}),
    seconds,
    report: path.resolve(values.report ?? 'pg-lifeline-demo.html'),
    open: !values['no-open'],
  };
}

export async function runDemo(argv: string[]): Promise<number> {
  const workerConfig = process.env[WORKER_ENV];
  if (workerConfig) return runWorker(JSON.parse(workerConfig) as WorkerConfig);
  const args = parseDemoArgs(argv);
  if (args === 'help') {
    process.stdout.write(DEMO_USAGE);
    return 0;
  }
  if (!args.url) {
    try {
      findServerBinaries();
    } catch (error) {
      if (!(error instanceof ServerBinariesNotFoundError)) throw error;
      const url = 'pg-lifeline demo --url postgres://user:password@host:5432/db';
      process.stderr.write(`pg-lifeline demo: ${error.message}\nOr run against a server of yours: ${url}\n`);
      return 1;
    }
  }
  onProcessExit(killAllWorkers);
  const aborter = new AbortController();
  const onSigint = (): void => aborter.abort();
  process.once('SIGINT', onSigint);
  let target: Target | undefined;
  let proxy: FaultProxy | undefined;
  try {
    log(args.url ? `using ${args.url.replace(/:[^:@/]*@/, ':***@')}` : 'starting a throwaway PostgreSQL ...');
    target = args.url ? urlTarget(args.url) : await startThrowaway();
    await createTables(target);
    proxy = await FaultProxy.start(target.conn);
    log(`server: ${target.describe}; both libraries connect through a fault proxy on 127.0.0.1:${proxy.port}`);
    for (const lib of LIBS) log(`configuration of ${LABEL[lib]}: ${CONFIGURATIONS[lib]}`);
    const result = await play(args, target, proxy, aborter.signal);
    if (!result) return 130;
    log(`\n${headline(result.libs, result.sent, result.seconds)}\n\n${faultTextTable(faultRows(result), LIBS)}\n`);
    log(`unknown: the error says the work may have taken effect; not applied: it says it did not; other: it does not say.`);
    log(`first ok: from the fault's end (an idle window: each idle gap's end, the worst) to the next success.\n`);
    log(`LISTEN per fault:\n${faultTextTable(faultRows(result), LIBS, true)}\n`);
    log(`${LISTEN_NOTE}\n`);
    if (result.skipped.length) log(`Not played:\n${result.skipped.map((s) => `  ${s}`).join('\n')}\n`);
    for (const lib of result.libs) for (const error of lib.listenErrors) log(`${LABEL[lib.lib]}: a worker process could not LISTEN: ${error}\n`);
    log(`${textTable(result.libs)}\n\n${errorText(result.libs)}`);
    const generatedAt = new Date();
    await writeFile(args.report, renderHtml(result, generatedAt));
    log(`\nreport: ${args.report}`);
    if (args.json) {
      await writeFile(args.json, `${JSON.stringify(demoJson(result, generatedAt), null, 2)}\n`);
      log(`json: ${args.json}`);
    }
    if (args.open) openInBrowser(args.report);
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
    killAllWorkers();
    await proxy?.close();
    if (target && !target.cluster) await dropTables(target).catch(() => {});
    await target?.cluster?.destroy();
  }
}

async function play(args: DemoArgs, target: Target, proxy: FaultProxy, signal: AbortSignal): Promise<DemoResult | undefined> {
  const t0 = Date.now() + STARTUP_MS;
  const endAt = t0 + args.seconds * 1000;
  const workers = LIBS.map(
    (lib) => new Supervisor({ lib, conn: target.via(proxy.host, proxy.port), t0, endAt, workers: WORKERS, idPrefix: ID_PREFIX[lib], appPrefix: APP_PREFIX }),
  );
  const publisher = startPublisher(target, t0, endAt);
  const ctx: FaultContext = { target, proxy, workers, t0, seconds: args.seconds, appPrefix: APP_PREFIX, windows: [], skipped: [], signal };
  const tty = process.stdout.isTTY === true;
  let current = 'warming up';
  const line = (): string => {
    const t = Math.max(0, Math.round((Date.now() - t0) / 1000));
    const libs = workers.map((w) => `${LABEL[w.lib]} ok ${w.ok} err ${w.errors}${w.crashes ? ` crashed x${w.crashes}${w.crashedNow ? ' (restarting)' : ''}` : ''}`);
    return `[${String(t).padStart(3)}s/${args.seconds}s] ${libs.join(' | ')} | fault: ${current}`;
  };
  const ticker = setInterval(() => tty && process.stdout.write(`\r\x1b[K${line()}`), 1000);
  const onFault = (w: FaultWindow): void => {
    current = w.end === undefined ? w.label : 'none';
    if (!tty) log(`${w.end === undefined ? 'fault start' : 'fault end  '} ${w.label} at ${(w.end ?? w.start).toFixed(1)} s | ${line()}`);
  };
  log(`running ${args.seconds} s of workload (${WORKERS} concurrent ops per library, each on its own rows)`);
  try {
    await playFaults(ctx, onFault).catch((error: unknown) => {
      if (!signal.aborted) throw error;
    });
    current = 'none';
    // Bounded: each worker is SIGKILLed a grace period after endAt.
    await Promise.race([Promise.all(workers.map((w) => w.done)), new Promise((resolve) => signal.addEventListener('abort', resolve))]);
  } finally {
    await publisher.stop();
    clearInterval(ticker);
    if (tty) process.stdout.write(`\r\x1b[K${line()}\n`);
  }
  if (signal.aborted) return undefined;
  for (const w of workers) if (w.lastCrash) log(`${LABEL[w.lib]} crashed ${w.crashes} time(s); last: ${w.lastCrash}`);
  const libs = [];
  for (const w of workers) libs.push(await summarize(target, w, args.seconds, ctx.windows));
  return { seconds: args.seconds, sent: publisher.sent, server: target.describe, windows: ctx.windows, skipped: ctx.skipped, libs };
}

function log(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Only where someone can see it: a terminal on a desktop. Detached, so it outlives nothing of ours. */
function openInBrowser(file: string): void {
  if (!process.stdout.isTTY) return;
  const command = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : process.env['DISPLAY'] || process.env['WAYLAND_DISPLAY'] ? 'xdg-open' : undefined;
  if (!command) return;
  const child = spawn(command, [file], { detached: true, stdio: 'ignore' });
  child.on('error', () => {});
  child.unref();
}
