// The LISTEN lane: a publisher NOTIFYs once a second; each library's worker holds one LISTEN and
// reports which notifications reached it.
import * as pg from 'pg';
import type { Pool } from '../index.js';
import type { Lib, ToldWindow } from './model.js';
import { withAdmin, type Target } from './server.js';

/** The channel of the lane; each payload is its send time in ms from t0. */
export const CHANNEL = 'pg_lifeline_demo';
const EVERY_MS = 1_000;
// Not matched by the demo's pg_terminate_backend (it ends `pg-lifeline-demo-%` sessions): the publisher is another service.
const PUBLISHER_APP = 'pg_lifeline_demo_publisher';

/** A running publisher: each notification the server accepted, as [sent, acknowledged] in ms from t0, by send time. */
export interface Publisher {
  readonly sent: Array<[number, number]>;
  stop(): Promise<void>;
}

/**
 * NOTIFYs once a second from 1 s after t0 (the workers' listeners are up by then) to endAt, each
 * on a fresh connection, so a fault on the server only costs the sends it hits.
 */
export function startPublisher(target: Target, t0: number, endAt: number): Publisher {
  const sent: Array<[number, number]> = [];
  const inFlight = new Set<Promise<void>>();
  const send = (): void => {
    if (Date.now() >= endAt) return;
    // Timed once connected, so [sent, acknowledged] brackets the NOTIFY's commit closely.
    const notify = async (client: pg.Client): Promise<void> => {
      const at = Date.now() - t0;
      await client.query('SELECT pg_notify($1, $2)', [CHANNEL, String(at)]);
      sent.push([at, Date.now() - t0]);
    };
    const attempt = withAdmin(target, notify, PUBLISHER_APP)
      .catch(() => {}) // the server is down or restarting: this one was never sent
      .finally(() => inFlight.delete(attempt));
    inFlight.add(attempt);
  };
  let timer: NodeJS.Timeout | undefined;
  const start = setTimeout(() => {
    send();
    timer = setInterval(send, EVERY_MS);
  }, Math.max(0, t0 + EVERY_MS - Date.now()));
  return {
    sent,
    async stop() {
      clearTimeout(start);
      clearInterval(timer);
      await Promise.all(inFlight); // each is bounded by withAdmin's connect timeout
      sent.sort((a, b) => a[0] - b[0]);
    },
  };
}

/** The plain pg.Client listener waits this long before each reconnect attempt, and never gives up. */
export const CLIENT_RECONNECT_MS = 1_000;

/** How the LISTEN lane counts, for the report, the terminal and docs/demo-json.md. */
export const LISTEN_NOTE =
  `A publisher sends a NOTIFY once a second, on a connection of its own. pg-lifeline listens with pool.listen(); ` +
  `pg.Pool's app with a plain pg.Client that, on its 'error' or 'end' event, waits ${CLIENT_RECONNECT_MS / 1000} s, then connects a new Client ` +
  `and LISTENs again, for as long as it takes. delivered: notifications received of those sent in the row's span; lost: the rest. ` +
  `told: the lost ones the listener had told the app it might lose. A loss is told when its NOTIFY (from its send to its acknowledgement) ` +
  `overlaps a window the listener reported. Such a window opens at pg-lifeline's 'disconnected' event's since (the last time the session was ` +
  `proven listening), or when pg.Client emitted 'error' or 'end'; it closes when the listener listens again (pg-lifeline's 'reconnected'; ` +
  `the new Client's LISTEN succeeding), or when its worker process exits. Notifications sent while a crashed worker process was down are lost and not told.`;

/** What the worker's listener heard: payloads (send times), the loss windows it told the app of, and why it could not listen, if so. */
export interface Heard {
  at: number[];
  told: ToldWindow[];
  error?: string;
  close(): Promise<void>;
}

/**
 * One LISTEN per library, each as its docs show. pg-lifeline: `pool.listen()`; a `disconnected`
 * event opens a told window from its `since`, `reconnected` closes it. pg.Pool's app: a plain
 * pg.Client that, on `error` or `end`, opens a told window at that moment, waits a fixed delay,
 * and connects and LISTENs again on a new Client until it succeeds, which closes the window.
 */
export async function listenFor(lib: Lib, pool: unknown, conn: pg.ClientConfig, t0: number): Promise<Heard> {
  const heard: Heard = { at: [], told: [], close: async () => {} };
  const onPayload = (payload: string | undefined): void => void heard.at.push(Number(payload));
  const open = (fromMs: number): void => {
    const last = heard.told.at(-1);
    if (!last || last[1] !== null) heard.told.push([fromMs - t0, null]);
  };
  const shut = (): void => {
    const last = heard.told.at(-1);
    if (last && last[1] === null) last[1] = Date.now() - t0;
  };
  try {
    if (lib === 'pg-lifeline') {
      const listener = await (pool as Pool).listen(CHANNEL, (msg) => onPayload(msg.payload));
      listener.on('disconnected', ({ since }) => open(since.getTime()));
      listener.on('reconnected', shut);
      listener.on('error', () => {}); // a refused re-LISTEN; the session keeps retrying
      heard.close = () => listener.close();
    } else {
      heard.close = await clientListener(conn, onPayload, () => open(Date.now()), shut);
    }
  } catch (error) {
    heard.error = (error as Error).message.split('\n')[0] ?? String(error);
  }
  return heard;
}

/**
 * The common recipe for a long-lived LISTEN on node-postgres. Resolves, with its close, once the
 * first attempt settled: a worker restarted while the server is down listens as soon as it can,
 * and works meanwhile.
 */
async function clientListener(conn: pg.ClientConfig, onPayload: (payload: string | undefined) => void, onLost: () => void, onBack: () => void): Promise<() => Promise<void>> {
  let closed = false;
  let current: pg.Client | undefined;
  let retry: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<void> => {
    const client = new pg.Client(conn);
    current = client;
    let lost = false;
    const lose = (): void => {
      if (lost) return;
      lost = true;
      client.end().catch(() => {});
      if (closed) return;
      onLost();
      retry = setTimeout(() => void attempt().then(onBack, () => {}), CLIENT_RECONNECT_MS);
    };
    client.on('error', lose);
    client.on('end', lose);
    client.on('notification', (msg) => onPayload(msg.payload));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (error) {
      lose();
      throw error;
    }
  };
  await attempt().catch(() => {}); // bounded by connectionTimeoutMillis; a failure retries like any other
  return async () => {
    closed = true;
    clearTimeout(retry);
    await current?.end().catch(() => {});
  };
}
