import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { emptyReport, type Lib, type WorkerReport } from './report.js';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.ts');
const READY_TIMEOUT_MS = 30_000;

export interface WorkerExit {
  report: WorkerReport;
  /** Whether a report line came at all (a SIGKILLed worker writes none). */
  reported: boolean;
  code: number | null;
  signal: NodeJS.Signals | null;
  killedByUs: boolean;
  stderrSummary: string;
}

export interface RunningWorker {
  lib: Lib;
  ready: Promise<void>;
  start(): void;
  faultEnd(): void;
  /** SIGKILL by pid, for a worker the scenario gives up on. */
  kill(): void;
  exited: Promise<WorkerExit>;
}

/**
 * Spawns one worker. `hardTimeoutMs` (from spawn) bounds it: past that it is SIGKILLed by its
 * own pid, never by name.
 */
export function spawnWorker(lib: Lib, env: Record<string, string>, hardTimeoutMs: number): RunningWorker {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env, LIB: lib };
  delete childEnv['NODE_TEST_CONTEXT']; // the worker is not a test file
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', WORKER], {
    env: childEnv,
    cwd: process.cwd(),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let killedByUs = false;
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stdin?.on('error', () => {}); // the worker may be gone (crashed) when we signal it

  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${lib} worker not ready after ${READY_TIMEOUT_MS} ms: ${stderr.slice(-2000)}`)), READY_TIMEOUT_MS);
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (stderr.includes('CHAOS-READY\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      reject(new Error(`${lib} worker exited before it was ready: ${stderr.slice(-2000)}`));
    });
  });
  ready.catch(() => {}); // also surfaced through `exited`

  const kill = (): void => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    killedByUs = true;
    process.kill(child.pid, 'SIGKILL');
  };
  const hardKill = setTimeout(kill, hardTimeoutMs);

  const exited = new Promise<WorkerExit>((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(hardKill);
      const line = stdout.split('\n').find((l) => l.startsWith('{'));
      let report: WorkerReport | undefined;
      try {
        report = line === undefined ? undefined : (JSON.parse(line) as WorkerReport);
      } catch {
        report = undefined;
      }
      // An uncaught exception prints the throw site, then `Error: ...` (or pg's `error: ...` for a
      // server error): keep that line, it says what killed the process.
      const lines = stderr.replace('CHAOS-READY\n', '').trim().split('\n');
      const stderrSummary = lines.find((l) => /^(\w*Error|error)\b.*:/.test(l)) ?? lines.slice(-3).join(' | ');
      resolve({ report: report ?? emptyReport(lib), reported: report !== undefined, code, signal, killedByUs, stderrSummary });
    });
  });

  const send = (line: string): void => {
    if (child.stdin && !child.stdin.destroyed && child.exitCode === null) child.stdin.write(`${line}\n`);
  };
  return { lib, ready, start: () => send('start'), faultEnd: () => send('fault-end'), kill, exited };
}
