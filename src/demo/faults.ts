// The fault script: one pass over the failures a pool meets in production, each in its own window.
import { setTimeout as delay } from 'node:timers/promises';
import type { FaultProxy } from '../throwaway/proxy.js';
import type { Supervisor } from './children.js';
import type { FaultWindow, Span } from './model.js';
import { terminateBackends, type Target } from './server.js';

/** The script is laid out for 90 s and scaled to --seconds; shorter runs play each fault once. */
const BASE_SECONDS = 90;
/** The last fault ends at least this long before the workload does, so recovery is measured. */
const TAIL_MS = 4_000;

export interface FaultContext {
  target: Target;
  proxy: FaultProxy;
  workers: Supervisor[];
  t0: number;
  seconds: number;
  appPrefix: string;
  windows: FaultWindow[];
  /** Notes for faults that could not run (no control of a --url server, or out of time). */
  skipped: string[];
  signal: AbortSignal;
}

interface Step {
  at: number;
  label: string;
  needsServer?: boolean;
  run(ctx: FaultContext, scale: number, window: FaultWindow): Promise<void>;
}

/** An idle gap outlasts idle_session_timeout (1 s) well; a burst of work after it shows what each library does with the sessions the server ended. */
const IDLE_GAP_MS = 2_500;
const BURST_MS = 1_500;

function steps(seconds: number): Step[] {
  const repeats = seconds >= 60 ? 3 : 1;
  const list: Step[] = [
    {
      at: 4,
      label: 'idle_session_timeout 1s',
      needsServer: true,
      run: async (ctx, scale, window) => {
        await ctx.target.cluster?.setSetting('idle_session_timeout', '1s');
        const gaps: Span[] = (window.gaps = []);
        for (let i = 0; i < Math.max(1, Math.round(3 * scale)); i++) {
          const gap: Span = { start: secondsSince(ctx.t0) };
          gaps.push(gap);
          ctx.workers.forEach((w) => w.setIdle(true));
          await delay(IDLE_GAP_MS, undefined, { signal: ctx.signal });
          ctx.workers.forEach((w) => w.setIdle(false));
          gap.end = secondsSince(ctx.t0);
          await delay(BURST_MS, undefined, { signal: ctx.signal });
        }
        await ctx.target.cluster?.resetSetting('idle_session_timeout');
      },
    },
  ];
  for (let i = 0; i < repeats; i++) {
    list.push({ at: 20 + 4 * i, label: 'pg_terminate_backend', run: async (ctx) => void (await terminateBackends(ctx.target, ctx.appPrefix)) });
  }
  list.push(
    { at: 34, label: 'restart -m fast', needsServer: true, run: async (ctx) => ctx.target.cluster?.restart('fast') },
    {
      at: 42,
      label: 'crash, down 3 s',
      needsServer: true,
      run: async (ctx) => {
        await ctx.target.cluster?.crash();
        await delay(3_000, undefined, { signal: ctx.signal });
        await ctx.target.cluster?.startAgain();
      },
    },
  );
  for (let i = 0; i < repeats; i++) {
    list.push({ at: 52 + 4 * i, label: 'connection reset', run: async (ctx) => ctx.proxy.resetAll() });
  }
  // Last, with the longest tail: pg-lifeline bounds a dead network by itself in about 12 s
  // (monitorGraceMillis + monitorDetectionMillis), and what pg.Pool does after it shows only later.
  list.push({
    at: 64,
    label: 'network blackhole',
    run: async (ctx, scale) => {
      const ms = scale >= 1 ? 5_000 : 3_000;
      ctx.proxy.blackhole(ms);
      await delay(ms, undefined, { signal: ctx.signal });
      ctx.proxy.passThrough(); // heals now, whichever of this and the proxy's own timer runs first
    },
  });
  return list;
}

const secondsSince = (t0: number): number => (Date.now() - t0) / 1000;

/** Plays the script; `onFault` hears each window as it opens and closes. */
export async function playFaults(ctx: FaultContext, onFault: (window: FaultWindow) => void): Promise<void> {
  const scale = ctx.seconds / BASE_SECONDS;
  const lastStart = ctx.t0 + ctx.seconds * 1000 - TAIL_MS;
  const now = (): number => secondsSince(ctx.t0);
  for (const step of steps(ctx.seconds)) {
    if (ctx.signal.aborted) return;
    if (step.needsServer && !ctx.target.cluster) {
      if (!ctx.skipped.some((s) => s.startsWith(step.label))) ctx.skipped.push(`${step.label}: skipped, it needs control of the server, and the demo restarts, crashes or reconfigures only a throwaway server of its own, never one given with --url`);
      continue;
    }
    const startAt = ctx.t0 + step.at * scale * 1000;
    await delay(Math.max(0, startAt - Date.now()), undefined, { signal: ctx.signal });
    if (Date.now() > lastStart) {
      ctx.skipped.push(`${step.label}: skipped, no time left in the run`);
      continue;
    }
    const window: FaultWindow = { label: step.label, start: now() };
    ctx.windows.push(window);
    onFault(window);
    try {
      await step.run(ctx, scale, window);
    } catch (error) {
      if (ctx.signal.aborted) return;
      window.label += ` (failed: ${(error as Error).message.split('\n')[0]})`;
    }
    window.end = now();
    onFault(window);
  }
}
