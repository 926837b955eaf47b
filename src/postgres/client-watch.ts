// The silence watch of pg-lifeline's Client: a statement that has received nothing for a while is
// checked from a separate connection, as the Pool's monitor does, so a dead network (a half-open
// connection, a blackholed route) ends in an error instead of a hang. TCP keepalive cannot do it:
// it only probes connections with nothing unacknowledged in flight.
import * as pg from 'pg';
import { destroySocket, protocolPid, socketBytesRead } from './internals.js';
import { SilentConnectionError, type SilenceVerdict } from './silence.js';

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

// Every state but idle means the backend still works for us; a missing row means it is gone.
const ACTIVITY_SQL = 'SELECT state FROM pg_stat_activity WHERE pid = $1';
// A reply can be on the wire while the check's answer arrives first: idle twice in a row is needed.
const IDLE_SIGHTINGS = 2;

/**
 * Watches `client` while `busy()` holds. Calls `cutOff` with the reason once it decides the reply
 * will never come (after cutting the socket, which fails the statement). Returns a stop function.
 */
export function watchSilence(client: pg.Client, settings: WatchSettings, busy: () => boolean, cutOff: (error: SilentConnectionError) => void): () => void {
  if (settings.graceMillis === 0) return () => undefined;
  let bytes = socketBytesRead(client);
  let since = Date.now();
  let idleSeen = 0;
  let nextCheck = 0;
  let checking = false;
  let stopped = false;
  const stop = (): void => {
    stopped = true;
    clearInterval(timer);
  };
  const verdict = (v: SilenceVerdict): void => {
    if (stopped) return;
    stop();
    const error = new SilentConnectionError(v, Date.now() - since, settings.host);
    cutOff(error);
    destroySocket(client);
  };
  const check = async (): Promise<void> => {
    const pid = protocolPid(client);
    const probe = new pg.Client({ ...settings.probeOptions(), connectionTimeoutMillis: settings.detectionMillis, query_timeout: settings.detectionMillis });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      const rows = (await probe.query<{ state: string | null }>(ACTIVITY_SQL, [pid])).rows;
      if (rows.length === 0) return verdict('backend-gone');
      idleSeen = rows[0]?.state === 'idle' ? idleSeen + 1 : 0;
      if (idleSeen >= IDLE_SIGHTINGS) verdict('reply-lost');
      // Still working (a slow statement): ask again after another grace period, not on every tick.
      else if (idleSeen === 0) nextCheck = Date.now() + settings.graceMillis;
    } catch {
      verdict('host-unreachable');
    } finally {
      await probe.end().catch(() => undefined);
    }
  };
  const timer = setInterval(() => {
    if (stopped || checking) return;
    if (!busy()) return stop();
    const read = socketBytesRead(client);
    if (read === undefined || protocolPid(client) === undefined) return stop();
    if (read !== bytes) {
      bytes = read;
      since = Date.now();
      idleSeen = 0;
      return;
    }
    if (Date.now() - since < settings.graceMillis || Date.now() < nextCheck) return;
    checking = true;
    void check().finally(() => (checking = false));
  }, Math.max(50, Math.min(1000, Math.floor(settings.graceMillis / 4))));
  timer.unref();
  return stop;
}
