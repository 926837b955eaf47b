// pg-lifeline's pool.listen() against pg-listen 1.7, both with default options, side by side on the
// same server under the same faults, while a publisher sends numbered NOTIFYs throughout.
// Run: npx tsx bench/listen-vs-pg-listen.ts [--fault NAME] [--only pg-lifeline|pg-listen]
import pgListen from 'pg-listen';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool, type DisconnectedEvent } from '../src/index.js';
import { PgCluster } from '../test/harness/cluster.js';
import { FaultProxy } from '../test/harness/proxy.js';
import { ReplicaSet } from '../test/harness/replication.js';

// CommonJS with a `default` export: TypeScript types the import as module.exports, tsx unwraps it.
const createSubscriber: typeof pgListen.default = typeof pgListen === 'function' ? pgListen : (pgListen as { default: typeof pgListen.default }).default;
const CHANNEL = 'bench_listen';
/** A library that has not delivered a NOTIFY sent after the fault by then is recorded as not back. */
const RECOVERY_LIMIT_MS = 20_000;
const CLOSE_LIMIT_MS = 5_000;
const PUBLISH_EVERY_MS = 20;

type LibName = 'pg-lifeline' | 'pg-listen';
type Target = { config: Record<string, unknown>; multiHostUrl?: string };

/** What one library told the app and what it delivered during one fault. */
interface Run {
  lib: LibName;
  /** Payload number to the time it arrived. */
  received: Map<number, number>;
  /** Windows the library reported as a possible loss; `to` undefined while open. */
  windows: { from: number; to: number | undefined }[];
  gaveUp: boolean;
  errors: string[];
  /** When the library first told the app of an outage (its event, not the window's start). */
  toldAt: number | undefined;
  close(): Promise<void>;
}

interface Row {
  fault: string;
  lib: LibName;
  sent: number;
  delivered: number;
  lost: number;
  lostReported: number;
  outages: number;
  backAfterMs: number | undefined;
  toldAfterMs: number | undefined;
  gaveUp: boolean;
  uncaught: number;
  closeHung: boolean;
  errors: string[];
}

// Both libraries run in this process, so an uncaught error is charged by its stack.
let currentFault = '';
const uncaught: { fault: string; lib: LibName | 'unknown'; message: string }[] = [];
function charge(error: unknown): void {
  const stack = error instanceof Error ? `${error.message}\n${error.stack ?? ''}` : String(error);
  const lib = stack.includes('pg-listen') ? 'pg-listen' : stack.includes('/src/') ? 'pg-lifeline' : 'unknown';
  uncaught.push({ fault: currentFault, lib, message: stack.split('\n')[0] ?? '' });
}
process.on('uncaughtException', charge);
process.on('unhandledRejection', charge);

function openWindow(run: Run, from: number): void {
  run.toldAt ??= Date.now();
  const last = run.windows.at(-1);
  if (last === undefined || last.to !== undefined) run.windows.push({ from, to: undefined });
}
function closeWindow(run: Run): void {
  const last = run.windows.at(-1);
  if (last !== undefined && last.to === undefined) last.to = Date.now();
}

async function startLifeline(target: Target, app: string): Promise<Run> {
  const pool = target.multiHostUrl !== undefined
    ? new Pool({ connectionString: target.multiHostUrl, application_name: app })
    : new Pool({ ...target.config, application_name: app });
  const run: Run = { lib: 'pg-lifeline', received: new Map(), windows: [], gaveUp: false, errors: [], toldAt: undefined, close: async () => {} };
  const listener = await pool.listen(CHANNEL, (msg) => void run.received.set(Number(msg.payload), Date.now()));
  listener.on('disconnected', (event: DisconnectedEvent) => openWindow(run, event.since.getTime()));
  listener.on('reconnected', () => closeWindow(run));
  listener.on('error', (error) => void run.errors.push(error.message));
  run.close = async () => {
    await listener.close();
    await pool.end();
  };
  return run;
}

async function startPgListen(target: Target, app: string): Promise<Run> {
  const subscriber = createSubscriber({ ...target.config, application_name: app });
  const run: Run = { lib: 'pg-listen', received: new Map(), windows: [], gaveUp: false, errors: [], toldAt: undefined, close: () => subscriber.close() };
  // What its events tell the app: a reconnect attempt opens a window, `connected` closes it, and an
  // `error` after which it stops reconnecting leaves it open for good.
  subscriber.events.on('reconnect', () => openWindow(run, Date.now()));
  subscriber.events.on('connected', () => closeWindow(run));
  subscriber.events.on('error', (error: Error) => {
    run.errors.push(error.message);
    openWindow(run, Date.now());
    if (/reconnection attempts|Reconnecting notification client/.test(error.message)) run.gaveUp = true;
  });
  subscriber.notifications.on(CHANNEL, (payload: unknown) => void run.received.set(Number(payload), Date.now()));
  await subscriber.connect();
  await subscriber.listenTo(CHANNEL);
  return run;
}

/** Numbered NOTIFYs from a pool of its own, one every PUBLISH_EVERY_MS; only committed ones count. */
function publisher(target: Target): { sent: Map<number, { start: number; done: number }>; stop(): Promise<void> } {
  const options = { max: 1, retry: false, connectionTimeoutMillis: 1000, hostRecheckMillis: 200 } as const;
  const pool = target.multiHostUrl !== undefined ? new Pool({ connectionString: target.multiHostUrl, ...options }) : new Pool({ ...target.config, ...options });
  pool.on('error', () => {});
  const sent = new Map<number, { start: number; done: number }>();
  let stopped = false;
  const loop = (async () => {
    // Bounded: about two minutes whatever happens.
    for (let n = 1; n <= 6000 && !stopped; n++) {
      const start = Date.now();
      const ok = await pool.query('SELECT pg_notify($1, $2)', [CHANNEL, String(n)]).then(() => true, () => false);
      if (ok) sent.set(n, { start, done: Date.now() });
      await sleep(PUBLISH_EVERY_MS);
    }
  })();
  return {
    sent,
    async stop() {
      stopped = true;
      await loop;
      await pool.end();
    },
  };
}

async function until(limitMs: number, condition: () => boolean): Promise<boolean> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    if (condition()) return true;
    await sleep(50);
  }
  return condition();
}

/** A fault: `inject` runs it and resolves when it is over (the server or the network is back). */
interface Fault {
  name: string;
  proxied?: boolean;
  failover?: boolean;
  /** Runs before the listeners start. */
  setup?(ctx: { cluster: PgCluster }): Promise<void>;
  /** Runs at the end even when the run failed. */
  teardown?(ctx: { cluster: PgCluster }): Promise<void>;
  inject(ctx: { cluster: PgCluster; proxy: FaultProxy | undefined; set: ReplicaSet | undefined }): Promise<void>;
}

const FAULTS: Fault[] = [
  { name: 'backend killed', inject: async ({ cluster }) => void (await cluster.terminateBackends()) },
  {
    // Set before the sessions open: the server arms the timer only when a session goes idle, so a
    // session idle since before the change would never see it.
    name: 'idle_session_timeout (10 s, for 12 s)',
    setup: ({ cluster }) => cluster.setSetting('idle_session_timeout', '10s'),
    inject: async ({ cluster }) => {
      await sleep(12_000);
      await cluster.resetSetting('idle_session_timeout');
    },
    teardown: ({ cluster }) => cluster.resetSetting('idle_session_timeout'),
  },
  { name: 'fast restart', inject: ({ cluster }) => cluster.restart('fast') },
  {
    name: 'crash, 3 s down',
    inject: async ({ cluster }) => {
      await cluster.crash();
      await sleep(3000);
      await cluster.startAgain();
    },
  },
  {
    name: 'blackhole (5 s)',
    proxied: true,
    inject: async ({ proxy }) => {
      proxy?.blackhole(5000);
      await sleep(5000);
      proxy?.passThrough();
    },
  },
  {
    // A path that died without a word (a NAT or firewall dropped it, a peer vanished): nothing heals it.
    name: 'half-open (the open connections go dark for good)',
    proxied: true,
    inject: async ({ proxy }) => proxy?.darkenExisting(),
  },
  { name: 'reset', proxied: true, inject: async ({ proxy }) => proxy?.resetAll() },
  {
    name: 'refused (5 s)',
    proxied: true,
    inject: async ({ proxy }) => {
      await proxy?.refuse(5000);
      proxy?.resetAll();
      await sleep(5000);
      await proxy?.accept();
    },
  },
  {
    name: 'failover to the standby',
    failover: true,
    inject: async ({ set }) => {
      await set?.primary.stop('fast');
      await set?.promoteStandby();
    },
  },
];

function lossesReported(run: Run, sent: Map<number, { start: number; done: number }>): { lost: number; reported: number } {
  let lost = 0;
  let reported = 0;
  for (const [n, times] of sent) {
    if (run.received.has(n)) continue;
    lost++;
    if (run.windows.some((w) => times.done >= w.from && times.start <= (w.to ?? Infinity))) reported++;
  }
  return { lost, reported };
}

async function closeWithin(run: Run): Promise<boolean> {
  const closed = run.close().then(() => true, (error: unknown) => {
    run.errors.push(`close: ${String(error)}`);
    return true;
  });
  return Promise.race([closed, sleep(CLOSE_LIMIT_MS).then(() => false)]);
}

async function runFault(fault: Fault, libs: LibName[], cluster: PgCluster): Promise<Row[]> {
  currentFault = fault.name;
  const set = fault.failover === true ? await ReplicaSet.start() : undefined;
  const server = set?.primary ?? cluster;
  const proxy = fault.proxied === true ? await FaultProxy.start(server) : undefined;
  const direct: Target = { config: { ...server.clientConfig() } };
  const libTarget: Target = proxy !== undefined ? { config: { ...server.clientConfig(), host: proxy.host, port: proxy.port } } : direct;
  if (set !== undefined) {
    // pg-lifeline is given both hosts, as its docs say; pg-listen takes one, so the primary's.
    const hosts = `127.0.0.1:${set.primary.port},127.0.0.1:${set.standby.port}`;
    const url = `postgres://${set.primary.user}:${encodeURIComponent(set.primary.password)}@${hosts}/${set.primary.database}?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=${encodeURIComponent(set.primary.caFile ?? '')}`;
    direct.multiHostUrl = url;
  }
  const runs: Run[] = [];
  const rows: Row[] = [];
  try {
    await fault.setup?.({ cluster });
    for (const lib of libs) {
      const app = `bench-${lib}-${process.pid}`;
      runs.push(lib === 'pg-lifeline' ? await startLifeline(set !== undefined ? direct : libTarget, app) : await startPgListen(libTarget, app));
    }
    const pub = publisher(direct);
    await until(10_000, () => runs.every((run) => run.received.size >= 10));
    const uncaughtBefore = uncaught.length;
    for (const run of runs) run.toldAt = undefined;
    const faultStart = Date.now();
    await fault.inject({ cluster, proxy, set });
    const faultEnd = Date.now();
    const firstAfter = (run: Run): number | undefined => {
      let first: number | undefined;
      for (const [n, at] of run.received) if ((pub.sent.get(n)?.start ?? 0) > faultEnd && (first === undefined || at < first)) first = at;
      return first;
    };
    await until(RECOVERY_LIMIT_MS, () => runs.every((run) => firstAfter(run) !== undefined || run.gaveUp));
    // A little more traffic after the last one is back, so its losses are counted against what followed.
    await sleep(1000);
    await pub.stop();
    const last = Math.max(0, ...pub.sent.keys());
    await until(2000, () => runs.every((run) => run.received.has(last) || firstAfter(run) === undefined));
    for (const run of runs) {
      const { lost, reported } = lossesReported(run, pub.sent);
      const back = firstAfter(run);
      rows.push({
        fault: fault.name,
        lib: run.lib,
        sent: pub.sent.size,
        delivered: [...run.received.keys()].filter((n) => pub.sent.has(n)).length,
        lost,
        lostReported: reported,
        outages: run.windows.length,
        backAfterMs: back === undefined ? undefined : back - faultEnd,
        toldAfterMs: run.toldAt === undefined ? undefined : run.toldAt - faultStart,
        gaveUp: run.gaveUp,
        uncaught: uncaught.slice(uncaughtBefore).filter((u) => u.lib === run.lib).length,
        closeHung: !(await closeWithin(run)),
        errors: run.errors,
      });
    }
  } finally {
    await fault.teardown?.({ cluster });
    await proxy?.close();
    await set?.destroy();
  }
  return rows;
}

function table(rows: Row[]): string {
  const lines = [
    '| Fault | Library | Delivered / sent | Lost | Outages reported | First told after the fault began | Lost inside a reported outage | Back: first NOTIFY sent after the fault, delivered after | Gave up | Uncaught errors | close() hung |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const back = r.backAfterMs === undefined ? `no (${RECOVERY_LIMIT_MS / 1000} s limit)` : `${(r.backAfterMs / 1000).toFixed(2)} s`;
    lines.push(`| ${r.fault} | ${r.lib} | ${r.delivered} / ${r.sent} | ${r.lost} | ${r.outages} | ${r.toldAfterMs === undefined ? '-' : `${(r.toldAfterMs / 1000).toFixed(2)} s`} | ${r.lostReported} / ${r.lost} | ${back} | ${r.gaveUp ? 'yes' : 'no'} | ${r.uncaught} | ${r.closeHung ? 'yes' : 'no'} |`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const only = args.includes('--only') ? (args[args.indexOf('--only') + 1] as LibName) : undefined;
  const faultName = args.includes('--fault') ? args[args.indexOf('--fault') + 1] : undefined;
  const libs: LibName[] = only !== undefined ? [only] : ['pg-lifeline', 'pg-listen'];
  const faults = FAULTS.filter((f) => faultName === undefined || f.name.startsWith(faultName));
  const cluster = await PgCluster.start();
  const rows: Row[] = [];
  try {
    for (const fault of faults) {
      const got = await runFault(fault, libs, cluster);
      rows.push(...got);
      for (const r of got) {
        console.log(`figure: ${r.fault} / ${r.lib}: delivered ${r.delivered}/${r.sent}, lost ${r.lost} (${r.lostReported} inside one of ${r.outages} reported outages), told after ${r.toldAfterMs ?? '-'} ms, back ${r.backAfterMs ?? 'never'} ms, gave up ${r.gaveUp}, uncaught ${r.uncaught}, close hung ${r.closeHung}`);
        for (const e of new Set(r.errors)) console.log(`  ${r.lib} error event: ${e}`);
      }
    }
  } finally {
    await cluster.destroy();
  }
  console.log(`\n${new Date().toISOString()}, Node ${process.version}\n`);
  console.log(table(rows));
  const unknown = uncaught.filter((u) => u.lib === 'unknown');
  for (const u of unknown) console.log(`uncaught, not attributed (${u.fault}): ${u.message}`);
  process.exit(0);
}

await main();
