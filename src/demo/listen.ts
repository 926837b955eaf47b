// The LISTEN lane: a publisher NOTIFYs once a second; each library's worker holds one LISTEN and
// reports which notifications reached it.
import type * as pg from 'pg';
import type { Pool } from '../index.js';
import type { Lib } from './model.js';
import { withAdmin, type Target } from './server.js';

/** The channel of the lane; each payload is its send time in ms from t0. */
export const CHANNEL = 'pg_lifeline_demo';
const EVERY_MS = 1_000;
// Not matched by the demo's pg_terminate_backend (it ends `pg-lifeline-demo-%` sessions): the publisher is another service.
const PUBLISHER_APP = 'pg_lifeline_demo_publisher';

/** A running publisher: the send times (ms from t0) of the notifications the server accepted. */
export interface Publisher {
  readonly sent: number[];
  stop(): Promise<void>;
}

/**
 * NOTIFYs once a second from 1 s after t0 (the workers' listeners are up by then) to endAt, each
 * on a fresh connection, so a fault on the server only costs the sends it hits.
 */
export function startPublisher(target: Target, t0: number, endAt: number): Publisher {
  const sent: number[] = [];
  const inFlight = new Set<Promise<void>>();
  const send = (): void => {
    if (Date.now() >= endAt) return;
    const at = Date.now() - t0;
    const attempt = withAdmin(target, (client) => client.query('SELECT pg_notify($1, $2)', [CHANNEL, String(at)]), PUBLISHER_APP)
      .then(() => void sent.push(at))
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
      sent.sort((a, b) => a - b);
    },
  };
}

/** What the worker's listener heard: payloads (send times), and why it could not listen, if so. */
export interface Heard {
  at: number[];
  error?: string;
  close(): Promise<void>;
}

/**
 * One LISTEN per library, each as its docs show: pg-lifeline's `pool.listen()`; for pg.Pool a
 * client checked out for good, its `notification` event and a `LISTEN` query. That client gets an
 * `error` listener, so a dead listener shows as silence here, not as one more crash.
 */
export async function listenFor(lib: Lib, pool: unknown): Promise<Heard> {
  const heard: Heard = { at: [], close: async () => {} };
  const onPayload = (payload: string | undefined): void => void heard.at.push(Number(payload));
  try {
    if (lib === 'pg-lifeline') {
      const listener = await (pool as Pool).listen(CHANNEL, (msg) => onPayload(msg.payload));
      heard.close = () => listener.close();
    } else {
      const client = await (pool as pg.Pool).connect();
      client.on('error', () => {});
      client.on('notification', (msg) => onPayload(msg.payload));
      heard.close = async () => client.release(true);
      await client.query(`LISTEN ${CHANNEL}`);
    }
  } catch (error) {
    heard.error = (error as Error).message.split('\n')[0] ?? String(error);
  }
  return heard;
}
