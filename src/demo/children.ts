// Runs each library's worker as a child process, restarting it after a crash as a process
// supervisor would, and counting the crash.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Lib, WorkerConfig, WorkerReport } from './model.js';
import { OP_DEADLINE_MS, WORKER_ENV } from './worker.js';

/** Past endAt, a worker gets this long to finish its ops (each bounded by its watchdog) and end its pool before it is SIGKILLed. */
const GRACE_MS = OP_DEADLINE_MS + 8_000;
/** No restart this close to the end: the new process would barely start. */
const MIN_RESTART_MS = 2_000;
const MAX_RUNS = 20;

// Every live worker, so every exit path (including Ctrl-C) can kill them by pid.
const live = new Set<ChildProcess>();
// Set once the demo ends: a worker dying from that kill must not be restarted.
let stopping = false;

/** SIGKILLs every live worker, and stops restarting them: the demo is ending. */
export function killAllWorkers(): void {
  stopping = true;
  for (const child of live) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  live.clear();
}

/** One library's worker process, restarted after each crash until the run ends. */
export class Supervisor {
  readonly lib: Lib;
  /** Running totals over every incarnation, for the progress line. */
  ok = 0;
  errors = 0;
  crashes = 0;
  crashedNow = false;
  lastCrash = '';
  /** When each crash happened, in seconds from t0. */
  readonly crashAt: number[] = [];
  readonly reports: WorkerReport[] = [];
  readonly #config: WorkerConfig;
  #child: ChildProcess | undefined;
  #base = { ok: 0, errors: 0 };
  #idle = false;
  readonly done: Promise<void>;

  constructor(config: WorkerConfig) {
    this.lib = config.lib;
    this.#config = config;
    this.done = this.#supervise();
  }

  setIdle(idle: boolean): void {
    this.#idle = idle;
    this.#send(idle ? 'idle on' : 'idle off');
  }

  #send(line: string): void {
    const stdin = this.#child?.stdin;
    if (stdin && !stdin.destroyed && this.#child?.exitCode === null) stdin.write(`${line}\n`);
  }

  async #supervise(): Promise<void> {
    for (let run = 0; run < MAX_RUNS && !stopping && (run === 0 || Date.now() < this.#config.endAt - MIN_RESTART_MS); run++) {
      const crashed = await this.#runOnce();
      if (!crashed) return;
      this.crashes++;
      this.crashedNow = true;
    }
  }

  /** One worker process, to its end; resolves to whether it crashed. */
  #runOnce(): Promise<boolean> {
    // Re-runs this very CLI (dist/cli.cjs, or src/cli.ts under tsx: execArgv keeps the loader).
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1] ?? '', 'demo'], {
      env: { ...process.env, [WORKER_ENV]: JSON.stringify(this.#config) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(child);
    this.#child = child;
    child.stdin?.on('error', () => {}); // it may be gone when we signal it
    if (this.#idle) this.#send('idle on');
    let buffer = '';
    let stderr = '';
    let report: WorkerReport | undefined;
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.startsWith('P ')) {
          const [, ok, errors] = line.split(' ');
          this.ok = this.#base.ok + Number(ok);
          this.errors = this.#base.errors + Number(errors);
          this.crashedNow = false;
        } else if (line.startsWith('{')) {
          report = JSON.parse(line) as WorkerReport;
        }
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-4000)));
    const hardKill = setTimeout(() => child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), this.#config.endAt - Date.now() + GRACE_MS);
    return new Promise((resolve) => {
      child.once('close', (code, signal) => {
        clearTimeout(hardKill);
        live.delete(child);
        this.#base = { ok: this.ok, errors: this.errors };
        if (report) this.reports.push(report);
        const crashed = code !== 0 || signal !== null;
        if (crashed) this.crashAt.push((Date.now() - this.#config.t0) / 1000);
        // The line that names what killed it, e.g. `error: terminating connection due to administrator command`.
        if (crashed) this.lastCrash = stderr.split('\n').find((l) => /^(\w*Error|error)\b.*:/.test(l)) ?? `exit ${code ?? signal}`;
        resolve(crashed);
      });
    });
  }
}
