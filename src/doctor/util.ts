// Shared pieces of the doctor's checks: results, deadlines, and a pg client that can always be torn down.
import type { ConnectionOptions } from 'node:tls';
import * as pg from 'pg';
import { destroySocket } from '../postgres/internals.js';
import { clientConfig, type ConnSettings, type TlsVariant } from './settings.js';

export type Verdict = 'ok' | 'warn' | 'fail';

export interface CheckResult {
  name: string;
  verdict: Verdict;
  /** What the check found: one line. */
  found: string;
  /** What to do about it: one line. */
  advice: string;
  /** Machine-readable details for `--json`. */
  data?: Record<string, unknown>;
}

/** The pool settings the server's timeouts are compared with. */
export interface PoolNumbers {
  idleTimeoutMillis: number;
  maxLifetimeSeconds: number;
  keepaliveIntervalMillis: number;
  /** How long a statement may receive nothing before the monitor asks about it (0: monitoring off). */
  monitorGraceMillis: number;
  /** How long the monitor may go unanswered before the host is declared unreachable. */
  monitorDetectionMillis: number;
  query_timeout: number;
  min: number;
  max: number;
  /** `pg-lifeline defaults`, `flags`, or the --config path (with flags). */
  source: string;
}

export interface DoctorContext {
  settings: ConnSettings;
  timeoutMs: number;
  ca: Buffer | undefined;
  pool: PoolNumbers;
  instances: number;
  probeIdleMaxS: number | undefined;
  /** Set once a login works: the main session and how it was opened. */
  main?: Conn;
  variant?: TlsVariant;
  ssl?: false | ConnectionOptions;
  backendPid?: number | undefined;
  /** Set by the proxy check. */
  proxy?: { detected: boolean; mode: 'transaction' | 'session' | 'unknown' | undefined };
}

export const worst = (verdicts: Verdict[]): Verdict =>
  verdicts.includes('fail') ? 'fail' : verdicts.includes('warn') ? 'warn' : 'ok';

export class DeadlineError extends Error {
  readonly code = 'ETIMEDOUT';
}

/**
 * `promise`, or a DeadlineError after `ms` (calling `onTimeout` first, to tear down whatever the
 * promise waits on). The loser's rejection is swallowed, so nothing is ever unhandled.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string, onTimeout?: () => void): Promise<T> {
  promise.catch(() => {});
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(new DeadlineError(`${what}: no answer within ${ms} ms`));
    }, ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A pg client whose failures never crash the process, and which notes when its connection ended. */
export class Conn {
  readonly client: pg.Client;
  /** performance.now() when the connection ended by itself, and why. */
  endedAt: number | undefined;
  endError: Error | undefined;
  #timeoutMs: number;

  private constructor(client: pg.Client, timeoutMs: number) {
    this.client = client;
    this.#timeoutMs = timeoutMs;
    client.on('error', (error: Error) => {
      this.endError ??= error;
      this.endedAt ??= performance.now();
    });
    client.on('end', () => {
      this.endedAt ??= performance.now();
    });
  }

  static async open(settings: ConnSettings, ssl: false | ConnectionOptions, timeoutMs: number): Promise<Conn> {
    const conn = new Conn(new pg.Client(clientConfig(settings, ssl, timeoutMs)), timeoutMs);
    try {
      await withTimeout(conn.client.connect(), timeoutMs + 250, 'login', () => conn.destroy());
    } catch (error) {
      conn.destroy();
      throw error;
    }
    return conn;
  }

  /** The protocol's backend pid (BackendKeyData), which a proxy replaces with its own number. */
  get processID(): number | null {
    const id = (this.client as unknown as { processID?: unknown }).processID;
    return typeof id === 'number' ? id : null;
  }

  async query<R extends Record<string, unknown>>(sql: string, values?: unknown[], timeoutMs = this.#timeoutMs): Promise<R[]> {
    const result = withTimeout(this.client.query<R>(sql, values), timeoutMs, sql.length > 60 ? `${sql.slice(0, 57)}...` : sql, () => this.destroy());
    return (await result).rows;
  }

  destroy(): void {
    try {
      destroySocket(this.client);
    } catch {
      // already gone
    }
  }

  /** A graceful Terminate, or a torn-down socket when that takes more than a second. */
  async close(): Promise<void> {
    if (this.endedAt !== undefined) return this.destroy();
    await withTimeout(this.client.end(), 1000, 'close', () => this.destroy()).catch(() => this.destroy());
  }
}

/** SQLSTATE of a server error, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** A one-line description of an error: its message, SQLSTATE or errno code. */
export function describeError(error: unknown): string {
  const e = error as { message?: unknown; code?: unknown } | null;
  const message = String(e?.message ?? error).split('\n')[0]?.trim() || 'unknown error';
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (!code || message.includes(code)) return message;
  return sqlState(error) ? `${message} (SQLSTATE ${code})` : `${message} (${code})`;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** 0.42 ms, 12 ms, 1.5 s, 3 min, 2 h, 4 d. */
export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'never';
  if (ms < 10) return `${Number(ms.toFixed(2))} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 120) return `${Number(s.toFixed(1))} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Number((s / 3600).toFixed(1))} h`;
  return `${Math.round(s / 86_400)} d`;
}

/** A setting that is off at 0, shown as `off` or a duration. */
export const formatSetting = (ms: number | undefined): string => (ms === undefined ? 'n/a' : ms === 0 ? 'off' : formatMs(ms));

/** Roughly three quarters of `ms`, rounded down to a tidy number: a safe value to stay under a limit. */
export function safelyBelow(ms: number): number {
  const target = ms * 0.75;
  const step = target >= 10_000 ? 1000 : target >= 1000 ? 100 : 10;
  return Math.max(step, Math.floor(target / step) * step);
}
