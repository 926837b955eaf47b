// The silence watch of pg-lifeline's Client: a statement that has received nothing for a while is
// checked from a separate connection, as the Pool's monitor does, so a dead network (a half-open
// connection, a blackholed route) ends in an error instead of a hang. TCP keepalive cannot do it:
// it only probes connections with nothing unacknowledged in flight. One timer serves every Client
// with a statement in flight, and runs only while there is one.
import * as pg from 'pg';
import { destroySocket, protocolPid, socketBytesRead } from './internals.js';
import { IDLE_SIGHTINGS, SilentConnectionError, judgeBackend, type SilenceVerdict } from './silence.js';

/** When to look at a silent statement, and how long the check may take. */
export interface WatchSettings {
  /** Silence that makes the statement suspect; 0 turns the watch off. */
  readonly graceMillis: number;
  /** How long the check connection may take before the host counts as unreachable. */
  readonly detectionMillis: number;
  /** Options for the check connection (the same server, password included). */
  readonly probeOptions: () => pg.ClientConfig;
  /** `host:port`, for messages. */
  readonly host: string;
}

interface Watch {
  readonly settings: WatchSettings;
  readonly cutOff: (error: SilentConnectionError) => void;
  bytes: number | undefined;
  /** When bytes last arrived (or the watch began). */
  since: number;
  /** Not to be asked about again before this (it was found slow, not dead). */
  nextCheck: number;
  /** Checks in a row that found its backend idle. */
  idleSeen: number;
  checking: boolean;
}

const ACTIVITY_SQL = 'SELECT pid, state FROM pg_stat_activity WHERE pid = $1';
const TICK_MILLIS = 100;

const watches = new Map<pg.Client, Watch>();
let ticker: NodeJS.Timeout | undefined;

/**
 * Watches `client` until {@link unwatchSilence}. Calls `cutOff` with the reason once it decides the
 * reply will never come, then cuts the socket, which fails the statement.
 */
export function watchSilence(client: pg.Client, settings: WatchSettings, cutOff: (error: SilentConnectionError) => void): void {
  if (settings.graceMillis === 0 || socketBytesRead(client) === undefined) return;
  watches.set(client, { settings, cutOff, bytes: socketBytesRead(client), since: Date.now(), nextCheck: 0, idleSeen: 0, checking: false });
  if (ticker === undefined) {
    ticker = setInterval(tick, TICK_MILLIS);
    ticker.unref();
  }
}

/** Stops watching `client`: its statements have all been answered. */
export function unwatchSilence(client: pg.Client): void {
  watches.delete(client);
  if (watches.size === 0 && ticker !== undefined) {
    clearInterval(ticker);
    ticker = undefined;
  }
}

function tick(): void {
  const t = Date.now();
  for (const [client, watch] of watches) {
    if (watch.checking) continue;
    const read = socketBytesRead(client);
    if (read !== watch.bytes) {
      watch.bytes = read;
      watch.since = t;
      watch.idleSeen = 0;
      continue;
    }
    if (t - watch.since < watch.settings.graceMillis || t < watch.nextCheck || protocolPid(client) === undefined) continue;
    watch.checking = true;
    void check(client, watch).finally(() => (watch.checking = false));
  }
}

async function check(client: pg.Client, watch: Watch): Promise<void> {
  const pid = protocolPid(client);
  if (pid === undefined) return;
  const { detectionMillis } = watch.settings;
  const probe = new pg.Client({ ...watch.settings.probeOptions(), connectionTimeoutMillis: detectionMillis, query_timeout: detectionMillis });
  probe.on('error', () => undefined);
  try {
    await probe.connect();
    const rows = (await probe.query<{ pid: number; state: string | null }>(ACTIVITY_SQL, [pid])).rows;
    const judged = judgeBackend(new Map(rows.map((row) => [row.pid, row.state])), pid);
    if (judged === 'gone') return verdict(client, watch, 'backend-gone');
    watch.idleSeen = judged === 'idle' ? watch.idleSeen + 1 : 0;
    if (watch.idleSeen >= IDLE_SIGHTINGS) return verdict(client, watch, 'reply-lost');
    // Still working (a slow statement): ask again after another grace period, not on every tick.
    if (watch.idleSeen === 0) watch.nextCheck = Date.now() + watch.settings.graceMillis;
  } catch {
    verdict(client, watch, 'host-unreachable');
  } finally {
    await probe.end().catch(() => undefined);
  }
}

function verdict(client: pg.Client, watch: Watch, v: SilenceVerdict): void {
  // The statement may have been answered while the check ran.
  if (watches.get(client) !== watch) return;
  unwatchSilence(client);
  watch.cutOff(new SilentConnectionError(v, Date.now() - watch.since, watch.settings.host));
  destroySocket(client);
}
