// PgBouncer in front of a PgCluster (or anything that speaks the protocol), run in the foreground as
// our own child process so we know its PID and can always stop it.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { chown, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { HARNESS_PASSWORD, postgresOwner } from './pgbin.js';
import { freePort } from '../../src/throwaway/ports-and-files.js';
import { waitFor } from './wait.js';
import { onProcessExit } from './exit-hooks.js';

const START_TIMEOUT_MS = 10_000;
/** How long a safe shutdown (SIGINT) may take before it becomes an immediate one. */
const SAFE_STOP_GRACE_MS = 2_000;
const IMMEDIATE_STOP_GRACE_MS = 3_000;
const PORT_ATTEMPTS = 5;
const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export interface BouncerOptions {
  poolMode: 'transaction' | 'session';
  /** default_pool_size; 5 unless given. */
  defaultPoolSize?: number;
  /** Extra [pgbouncer] settings; they override the harness defaults. */
  extra?: Record<string, string | number>;
}

let binaryCache: string | null | undefined;
/**
 * The pgbouncer binary: $PGBOUNCER, else `pgbouncer` on PATH, else where packages put it (Debian's is
 * /usr/sbin/pgbouncer, which is not on a non-root PATH). Undefined when it is not installed.
 */
export function pgbouncerBinary(): string | undefined {
  if (binaryCache === undefined) {
    const candidates = [
      process.env['PGBOUNCER'],
      ...(process.env['PATH'] ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, 'pgbouncer')),
      '/usr/sbin/pgbouncer',
      '/usr/local/sbin/pgbouncer',
      '/usr/local/bin/pgbouncer',
    ];
    binaryCache = candidates.find((file): file is string => !!file && existsSync(file)) ?? null;
  }
  return binaryCache ?? undefined;
}

let versionCache: string | undefined;
/** `PgBouncer 1.18.0`, or undefined when it is not installed. */
export function pgbouncerVersion(): string | undefined {
  const bin = pgbouncerBinary();
  if (!bin) return undefined;
  versionCache ??= execFileSync(bin, ['--version'], { encoding: 'utf8' }).split('\n', 1)[0]?.trim();
  return versionCache;
}

/**
 * The signal for an immediate shutdown. PgBouncer 1.23 turned SIGTERM into a "super safe" shutdown
 * that waits for every client to leave, and made SIGQUIT the immediate one; before 1.23 SIGTERM is
 * immediate and SIGQUIT is not handled at all.
 */
function immediateSignal(): NodeJS.Signals {
  const [major = 0, minor = 0] = (/(\d+)\.(\d+)/.exec(pgbouncerVersion() ?? '') ?? []).slice(1).map(Number);
  return major > 1 || (major === 1 && minor >= 23) ? 'SIGQUIT' : 'SIGTERM';
}

function readTail(file: string, maxBytes = 4096): string {
  try {
    const text = readFileSync(file, 'utf8');
    return text.slice(-maxBytes);
  } catch {
    return '(none)';
  }
}

/** Whether `pid` is a process that has not exited (a zombie counts as exited). Linux only for zombies. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces or parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

/** Blocks the thread until `done()` or the deadline: only for the exit hook, where nothing async runs. */
function waitSync(done: () => boolean, timeoutMs: number): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (const deadline = Date.now() + timeoutMs; !done() && Date.now() < deadline; ) Atomics.wait(cell, 0, 0, 20);
}

export class Bouncer {
  // Bouncers whose dir exists. A test run that dies without destroy() would leak the process (it is
  // unref'd so it never keeps the test process alive): the exit hook stops it by PID.
  static #live = new Set<Bouncer>();
  static #hooksInstalled = false;

  readonly host: string = '127.0.0.1';
  readonly dir: string;
  readonly #target: { host: string; port: number };
  readonly #options: BouncerOptions;
  #port = 0;
  #child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();
  #destroying: Promise<void> | undefined;

  private constructor(dir: string, target: { host: string; port: number }, options: BouncerOptions) {
    this.dir = dir;
    this.#target = { host: target.host, port: target.port };
    this.#options = options;
  }

  get port(): number {
    return this.#port;
  }

  /** PID of the running pgbouncer process (our direct child), undefined while stopped. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get logFile(): string {
    return path.join(this.dir, 'pgbouncer.log');
  }

  static async start(target: { host: string; port: number }, options: BouncerOptions): Promise<Bouncer> {
    if (!pgbouncerBinary()) {
      const install = process.platform === 'darwin' ? 'brew install pgbouncer' : 'apt-get install pgbouncer';
      throw new Error(`pgbouncer not found ($PGBOUNCER, PATH, /usr/sbin, /usr/local/sbin, /usr/local/bin). Fix: ${install} (or run .ci/run), or set PGBOUNCER to the binary`);
    }
    const bouncer = new Bouncer(await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-bouncer-')), target, options);
    Bouncer.#track(bouncer); // in the same tick as mkdtemp, so the exit hook always knows the dir
    try {
      const owner = await postgresOwner();
      if (owner) await chown(bouncer.dir, owner.uid, owner.gid);
      // The server asks for a password (SCRAM): PgBouncer logs in with the one in its auth_file.
      await bouncer.#writeFile('userlist.txt', `"postgres" "${HARNESS_PASSWORD}"\n`);
      for (let attempt = 1; ; attempt++) {
        bouncer.#port = await freePort();
        try {
          await bouncer.#launch();
          break;
        } catch (error) {
          // The port can be taken between probing and binding.
          if (attempt >= PORT_ATTEMPTS || !/Address already in use/i.test((error as Error).message)) throw error;
        }
      }
    } catch (error) {
      await bouncer.destroy();
      throw error;
    }
    return bouncer;
  }

  static #track(bouncer: Bouncer): void {
    Bouncer.#live.add(bouncer);
    if (Bouncer.#hooksInstalled) return;
    Bouncer.#hooksInstalled = true;
    onProcessExit(() => Bouncer.#stopLeftovers());
  }

  static #stopLeftovers(): void {
    for (const bouncer of Bouncer.#live) {
      try {
        const pid = bouncer.#child?.pid;
        if (pid !== undefined && alive(pid)) {
          // Immediate shutdown: a safe one (SIGINT) waits for server connections to be released.
          process.kill(pid, immediateSignal());
          waitSync(() => !alive(pid), 2_000);
          if (alive(pid)) process.kill(pid, 'SIGKILL');
        }
        rmSync(bouncer.dir, { recursive: true, force: true });
      } catch {
        // Best effort while the process is going away.
      }
    }
    Bouncer.#live.clear();
  }

  async #writeFile(name: string, text: string): Promise<void> {
    const file = path.join(this.dir, name);
    await writeFile(file, text, { mode: 0o600 });
    const owner = await postgresOwner();
    if (owner) await chown(file, owner.uid, owner.gid);
  }

  #config(): string {
    const { poolMode, defaultPoolSize = 5, extra = {} } = this.#options;
    const settings: Record<string, string | number> = {
      listen_addr: '127.0.0.1',
      listen_port: this.#port,
      unix_socket_dir: '',
      auth_type: 'trust',
      auth_file: path.join(this.dir, 'userlist.txt'),
      logfile: this.logFile,
      pidfile: path.join(this.dir, 'pgbouncer.pid'),
      pool_mode: poolMode,
      default_pool_size: defaultPoolSize,
      max_client_conn: 200,
      ignore_startup_parameters: 'extra_float_digits,options',
      // The default 15 s pause after a failed server login would stall tests that restart the server.
      server_login_retry: 1,
      ...(poolMode === 'session' ? { server_reset_query: 'DISCARD ALL' } : {}),
      ...extra,
    };
    const lines = Object.entries(settings).map(([name, value]) => {
      if (!SETTING_NAME.test(name)) throw new Error(`Invalid pgbouncer setting name: ${JSON.stringify(name)}`);
      if (/[\r\n]/.test(String(value))) throw new Error(`Invalid value for pgbouncer setting ${name}`);
      return `${name} = ${value}`;
    });
    const { host, port } = this.#target;
    return [
      '[databases]',
      `postgres = host=${host} port=${port} dbname=postgres user=postgres`,
      '',
      '[pgbouncer]',
      ...lines,
      '',
    ].join('\n');
  }

  /** Writes the config, spawns pgbouncer in the foreground and waits until `SELECT 1` works through it. */
  async #launch(): Promise<void> {
    await this.#writeFile('pgbouncer.ini', this.#config());
    const owner = await postgresOwner();
    // Its own stderr (startup errors before the log file is open) goes to a file we can show.
    const stderrFile = path.join(this.dir, 'stderr.log');
    const stderr = await open(stderrFile, 'w');
    let child: ChildProcess;
    try {
      // pgbouncer refuses to run as root; spawning with uid/gid (instead of runuser) keeps the PID ours.
      child = spawn(pgbouncerBinary()!, [path.join(this.dir, 'pgbouncer.ini')], {
        cwd: this.dir,
        stdio: ['ignore', stderr.fd, stderr.fd],
        ...(owner ? { uid: owner.uid, gid: owner.gid } : {}),
      });
    } finally {
      await stderr.close();
    }
    this.#child = child;
    child.unref();
    let exitCode: string | undefined;
    this.#exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        exitCode = signal ?? String(code);
        if (this.#child === child) this.#child = undefined;
        resolve();
      });
      child.once('error', (error) => {
        exitCode = error.message;
        if (this.#child === child) this.#child = undefined;
        resolve();
      });
    });
    try {
      await waitFor(
        `pgbouncer on port ${this.#port} to accept connections`,
        async () => {
          if (exitCode !== undefined) return 'exited';
          const client = new pg.Client({ ...this.clientConfig(), connectionTimeoutMillis: 2_000 });
          client.on('error', () => {});
          try {
            await client.connect();
            await client.query('SELECT 1');
            return 'ready';
          } finally {
            await client.end().catch(() => {});
          }
        },
        { timeoutMs: START_TIMEOUT_MS, intervalMs: 25 },
      ).then((state) => {
        if (state === 'exited') throw new Error(`pgbouncer exited (${exitCode})`);
      });
    } catch (error) {
      await this.#kill('immediate');
      const detail = `--- stderr ---\n${readTail(stderrFile)}\n--- pgbouncer.log (tail) ---\n${readTail(this.logFile)}`;
      throw new Error(`pgbouncer failed to start on port ${this.#port}: ${(error as Error).message}\n${detail}`, {
        cause: error,
      });
    }
  }

  /** Signals our own child and waits for it to exit, escalating if the signal is not enough. */
  async #kill(mode: 'safe' | 'immediate'): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return this.#exited;
    const exited = this.#exited;
    // A ref'd timer: the child is unref'd, so without it the loop could run dry while we wait.
    const within = async (ms: number): Promise<boolean> => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
      try {
        return await Promise.race([exited.then(() => true), timeout]);
      } finally {
        clearTimeout(timer);
      }
    };
    if (mode === 'safe') {
      child.kill('SIGINT');
      if (await within(SAFE_STOP_GRACE_MS)) return;
    }
    child.kill(immediateSignal());
    if (await within(IMMEDIATE_STOP_GRACE_MS)) return;
    child.kill('SIGKILL');
    if (!(await within(IMMEDIATE_STOP_GRACE_MS))) throw new Error(`pgbouncer (pid ${child.pid}) did not exit after SIGKILL`);
  }

  clientConfig(): { host: string; port: number; user: string; database: string } {
    return { host: this.host, port: this.#port, user: 'postgres', database: 'postgres' };
  }

  /**
   * Stops our own pgbouncer process and waits for it to exit. 'safe' sends SIGINT (PAUSE, then exit):
   * it waits for every server connection to be released, which an open transaction, or any client in
   * session mode, never does, so after SAFE_STOP_GRACE_MS it becomes an immediate shutdown.
   * 'immediate' closes all client connections at once. SIGKILL is the last resort for both.
   */
  async stop(mode: 'safe' | 'immediate' = 'safe'): Promise<void> {
    await this.#kill(mode);
  }

  /** stop(mode), then start again on the same port; resolves when `SELECT 1` works through it. */
  async restart(mode: 'safe' | 'immediate' = 'safe'): Promise<void> {
    if (this.#destroying) throw new Error('Bouncer is destroyed');
    await this.stop(mode);
    await this.#launch();
  }

  /** Stops it and removes its temp dir; idempotent. */
  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      await this.#kill('immediate');
      Bouncer.#live.delete(this);
      await rm(this.dir, { recursive: true, force: true });
    })();
    this.#destroying.catch(() => (this.#destroying = undefined));
    return this.#destroying;
  }
}
