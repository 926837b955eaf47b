import { setTimeout as delay } from 'node:timers/promises';
import type { PgCluster } from '../harness/cluster.js';
import type { FaultProxy } from '../harness/proxy.js';

export interface FaultContext {
  cluster: PgCluster;
  proxy: FaultProxy;
  durationMs: number;
  /** Sleeps until `ms` after the workload started (at once if that is past). */
  at(ms: number): Promise<void>;
  /** Tells both workers the fault is over: the server or the proxy takes connections again. */
  faultEnd(): void;
}

export interface Scenario {
  name: string;
  tls?: boolean;
  /** Extra worker env (IDLE_GAPS, TX_PAUSE, QUERY_TIMEOUT_MS). */
  env?: Record<string, string>;
  /** Run this much longer than the others: faults that end at 7 s leave no time to see recovery. */
  tailMs?: number;
  setup?(ctx: FaultContext): Promise<void>;
  teardown?(ctx: FaultContext): Promise<void>;
  fault(ctx: FaultContext): Promise<void>;
}

async function every(ctx: FaultContext, periodMs: number, action: () => Promise<void> | void): Promise<void> {
  // Stop one period short of the end, so the last fault's recovery is inside the run.
  for (let t = periodMs; t <= ctx.durationMs - periodMs / 2; t += periodMs) {
    await ctx.at(t);
    await action();
    ctx.faultEnd();
  }
}

const killEvery2s = (ctx: FaultContext): Promise<void> => every(ctx, 2000, () => ctx.cluster.terminateBackends().then(() => undefined));
const resetEvery3s = (ctx: FaultContext): Promise<void> => every(ctx, 3000, () => ctx.proxy.resetAll());

export const SCENARIOS: Scenario[] = [
  { name: 'kill', fault: killEvery2s },
  { name: 'kill-tx', env: { TX_PAUSE: '1' }, fault: killEvery2s },
  {
    name: 'idle-timeout',
    env: { IDLE_GAPS: '1' },
    setup: (ctx) => ctx.cluster.setSetting('idle_session_timeout', '1s'),
    teardown: (ctx) => ctx.cluster.resetSetting('idle_session_timeout'),
    // The server ends idle sessions all along: there is no single fault end to signal.
    fault: async () => undefined,
  },
  {
    name: 'restart',
    fault: async (ctx) => {
      await ctx.at(2000);
      await ctx.cluster.restart('fast'); // pg_ctl -w: returns once the server accepts connections
      ctx.faultEnd();
    },
  },
  {
    name: 'crash',
    fault: async (ctx) => {
      await ctx.at(2000);
      await ctx.cluster.crash();
      await delay(3000);
      await ctx.cluster.startAgain();
      ctx.faultEnd();
    },
  },
  {
    name: 'blackhole',
    // Default options: the monitor alone bounds statements in flight (2 s grace + 10 s detection),
    // and the tail keeps the workload running past that bound.
    tailMs: 12000,
    fault: async (ctx) => {
      await ctx.at(2000);
      ctx.proxy.blackhole(5000);
      await delay(5000);
      ctx.proxy.passThrough(); // heals now, whichever of this and the proxy's own timer runs first
      ctx.faultEnd();
    },
  },
  { name: 'reset', fault: resetEvery3s },
  {
    name: 'refuse',
    tailMs: 4000,
    fault: async (ctx) => {
      await ctx.at(2000);
      await ctx.proxy.refuse(5000);
      // Refusing alone leaves a warm pool untouched (live connections stay up), so the open ones
      // are reset too: the pools must open new connections while nobody answers.
      ctx.proxy.resetAll();
      await delay(5000);
      await ctx.proxy.accept();
      ctx.faultEnd();
    },
  },
  { name: 'kill-tls', tls: true, fault: killEvery2s },
  { name: 'reset-tls', tls: true, fault: resetEvery3s },
];
