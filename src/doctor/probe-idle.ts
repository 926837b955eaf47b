// Check 8 (--probe-idle): hold idle connections for 1, 2, 4, ... s and find when idle ones get killed.
import { Conn, describeError, formatMs, safelyBelow, sleep, sqlState, type CheckResult, type DoctorContext } from './util.js';

const POLL_MS = 50;

interface Probe {
  seconds: number;
  alive: boolean | null;
  /** When the connection was seen to end by itself, in ms after it went idle. */
  diedAfterMs?: number;
  /** How it ended: `closed` (the far end closed it) or `silent` (no answer any more). */
  how?: 'closed' | 'silent';
  error?: string;
  sqlState?: string;
}

/** 1, 2, 4, ... seconds, up to and including `maxS`. */
export function probeIntervals(maxS: number): number[] {
  const out: number[] = [];
  for (let s = 1; s < maxS; s *= 2) out.push(s);
  out.push(maxS);
  return out;
}

async function probe(ctx: DoctorContext, seconds: number): Promise<Probe> {
  let conn: Conn;
  try {
    conn = await Conn.open(ctx.settings, ctx.ssl ?? false, ctx.timeoutMs);
    await conn.query('SELECT 1');
  } catch (error) {
    return { seconds, alive: null, error: `could not open: ${describeError(error)}` };
  }
  try {
    const idleFrom = performance.now();
    while (conn.endedAt === undefined && performance.now() - idleFrom < seconds * 1000) await sleep(POLL_MS);
    if (conn.endedAt === undefined) {
      try {
        await conn.query('SELECT 1');
        return { seconds, alive: true };
      } catch (error) {
        if (conn.endedAt === undefined || (error as { code?: string }).code === 'ETIMEDOUT') {
          return { seconds, alive: false, how: 'silent', error: describeError(error) };
        }
      }
    }
    const cause = conn.endError;
    return {
      seconds,
      alive: false,
      how: 'closed',
      diedAfterMs: Math.max(0, (conn.endedAt ?? performance.now()) - idleFrom),
      error: cause ? describeError(cause) : 'the connection was closed',
      ...(sqlState(cause) ? { sqlState: sqlState(cause) as string } : {}),
    };
  } finally {
    await conn.close();
  }
}

export async function checkProbeIdle(ctx: DoctorContext): Promise<CheckResult> {
  const maxS = ctx.probeIdleMaxS ?? 60;
  const intervals = probeIntervals(maxS);
  const probes = await Promise.all(intervals.map((seconds) => probe(ctx, seconds)));
  const dead = probes.filter((p) => p.alive === false);
  const alive = probes.filter((p) => p.alive === true);
  const unopened = probes.filter((p) => p.alive === null);
  const held = `held idle ${intervals.map((s) => `${s}`).join(', ')} s`;
  const data: Record<string, unknown> = { maxSeconds: maxS, probes };
  if (dead.length === 0) {
    const verdict = alive.length === 0 ? 'warn' : 'ok';
    return {
      name: 'idle-probe',
      verdict,
      found: alive.length === 0 ? `no probe connection opened (${unopened[0]?.error ?? '?'})` : `no idle connection was killed up to ${maxS} s (${held})`,
      advice: alive.length === 0 ? 'fix the problems above first' : `nothing to do up to ${maxS} s; raise --probe-idle-max-s to look further`,
      data: { ...data, killedAfterSeconds: null },
    };
  }
  const shortest = Math.min(...dead.map((p) => p.seconds));
  const survived = Math.max(0, ...alive.filter((p) => p.seconds < shortest).map((p) => p.seconds));
  const times = dead.map((p) => p.diedAfterMs).filter((t): t is number => t !== undefined);
  const diedAfter = times.length ? Math.min(...times) : undefined;
  const killAt = diedAfter ?? shortest * 1000;
  const silent = dead.some((p) => p.how === 'silent');
  const first = dead.find((p) => p.seconds === shortest);
  const who =
    first?.sqlState === '57P05'
      ? "the server's idle_session_timeout"
      : ctx.proxy?.detected
        ? 'probably the proxy (PgBouncer: client_idle_timeout)'
        : silent
          ? 'a firewall, NAT or load balancer that drops idle flows silently'
          : 'a proxy, firewall or the server';
  const found =
    `idle connections are killed after ${diedAfter !== undefined ? `~${formatMs(diedAfter)}` : `${survived} to ${shortest} s`} ` +
    `(alive after ${survived ? `${survived} s` : 'no interval'}, dead after ${dead.map((p) => `${p.seconds} s`).join(', ')}; ${first?.how === 'silent' ? 'silently: no answer' : first?.error ?? 'closed'}); ` +
    `by ${who}`;
  const pool = ctx.pool;
  const idle = pool.idleTimeoutMillis || Infinity;
  const keepalive = pool.keepaliveIntervalMillis || Infinity;
  const idleBound = pool.min > 0 ? keepalive : Math.min(idle, keepalive);
  const target = safelyBelow(killAt);
  const risky = idleBound >= killAt;
  const advice = risky
    ? `the pool keeps connections idle up to ${formatMs(idleBound)}: ` +
      (pool.min > 0
        ? `set keepaliveIntervalMillis: ${target} (the ${pool.min} min connections are only pinged, never closed for idleness)`
        : `set idleTimeoutMillis: ${target} (or keepaliveIntervalMillis: ${target} to keep them alive with pings)`) +
      `${silent ? '; silent drops also hang statements: set query_timeout' : ''}`
    : `the pool closes or pings idle connections within ${formatMs(idleBound)}, before that happens`;
  Object.assign(data, { killedAfterSeconds: shortest, aliveAfterSeconds: survived || null, diedAfterMs: diedAfter ?? null, silent });
  return { name: 'idle-probe', verdict: risky ? 'fail' : 'ok', found, advice, data };
}
