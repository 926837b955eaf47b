/**
 * A JSON service on plain node:http and pg-lifeline.
 *
 *   GET  /items    the latest items
 *   POST /items    {"name": "..."}: the item and its audit event, in one transaction
 *   GET  /health   whether the database answers, and pool.stats()
 *
 *   npx tsx examples/http-service.ts          serves on 127.0.0.1:$PORT (3000) until SIGINT or SIGTERM
 *   npx tsx examples/http-service.ts --once   self-check: requests through terminated sessions, then exits
 */
import http from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { AcquireTimeoutError, ConnectionLostError, Pool, PoolEndedError, QueryTimeoutError, ServerUnavailableError, isOutcomeUnknown } from 'pg-lifeline';
import { Checks, selfCheck, terminateApp } from './self-check.js';
import { runExample } from './throwaway.js';

const APP = 'example-http-service';
const MAX_BODY_BYTES = 16 * 1024;
// How long shutdown lets requests in flight finish before cutting their sockets.
const DRAIN_MS = 10_000;

interface Item {
  id: number;
  name: string;
  created_at: Date;
}

interface Reply {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

/** A failure that is the client's doing, with its status. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS items (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now());
  CREATE TABLE IF NOT EXISTS item_events (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id integer NOT NULL REFERENCES items,
    kind text NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
`;

async function listItems(pool: Pool): Promise<Item[]> {
  // A read is harmless to repeat, so it is retried even if its connection dies with it in flight.
  const { rows } = await pool.query<Item>({ text: 'SELECT id, name, created_at FROM items ORDER BY id DESC LIMIT 100', idempotent: true });
  return rows;
}

function createItem(pool: Pool, name: string): Promise<Item> {
  // retry: the function touches nothing but the database, so the pool may run it again when the
  // transaction certainly did not commit. A connection lost during COMMIT is resolved by asking
  // the server whether it committed, so an item is never created twice.
  return pool.transaction(
    async (client) => {
      const item = (await client.query<Item>('INSERT INTO items (name) VALUES ($1) RETURNING id, name, created_at', [name])).rows[0]!;
      await client.query("INSERT INTO item_events (item_id, kind) VALUES ($1, 'created')", [item.id]);
      return item;
    },
    { retry: true },
  );
}

async function health(pool: Pool): Promise<Reply> {
  try {
    await pool.query({ text: 'SELECT 1', idempotent: true, signal: AbortSignal.timeout(2_000) });
    return { status: 200, body: { status: 'ok', pool: pool.stats() } };
  } catch (error) {
    return { status: 503, headers: { 'retry-after': '5' }, body: { status: 'unavailable', error: errorCode(error), pool: pool.stats() } };
  }
}

async function readJson(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `the body is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'the body is not JSON');
  }
}

function itemName(body: unknown): string {
  const name = (body as { name?: unknown } | null)?.name;
  if (typeof name !== 'string' || name.length === 0 || name.length > 100) throw new HttpError(400, 'name: a string of 1 to 100 characters');
  return name;
}

async function route(pool: Pool, req: http.IncomingMessage): Promise<Reply> {
  const path = new URL(req.url ?? '/', 'http://localhost').pathname;
  switch (`${req.method} ${path}`) {
    case 'GET /items':
      return { status: 200, body: await listItems(pool) };
    case 'POST /items':
      return { status: 201, body: await createItem(pool, itemName(await readJson(req))) };
    case 'GET /health':
      return health(pool);
    default:
      throw new HttpError(404, `no route for ${req.method} ${path}`);
  }
}

// pg-lifeline's own code (lifelineCode) names the failure; `code` stays pg's SQLSTATE or errno, as with pg.Pool.
function errorCode(error: unknown): string {
  const e = error as { code?: unknown; lifelineCode?: unknown } | null;
  const code = e?.lifelineCode ?? e?.code;
  return typeof code === 'string' ? code : 'internal';
}

/**
 * What a failure means to the HTTP client. pg-lifeline's errors say whether the work ran, so the
 * client learns whether repeating the request is safe. Their messages explain the failure (host,
 * timings, advice): fine for an internal service; a public one would log them and send less.
 */
function errorReply(error: unknown): Reply {
  if (error instanceof HttpError) return { status: error.status, body: { error: error.message } };
  if (error instanceof AcquireTimeoutError) {
    // No connection, so nothing ran. 'exhausted' is our own overload; 'unreachable' a database outage.
    const retryAfter = error.reason === 'exhausted' ? '1' : '5';
    return { status: 503, headers: { 'retry-after': retryAfter }, body: { error: error.lifelineCode, reason: error.reason, message: error.message } };
  }
  if (error instanceof ServerUnavailableError || error instanceof PoolEndedError) {
    return { status: 503, headers: { 'retry-after': '5' }, body: { error: error.lifelineCode, message: error.message } };
  }
  if (error instanceof QueryTimeoutError) return { status: 504, body: { error: error.lifelineCode, outcome: 'unknown', message: error.message } };
  if (isOutcomeUnknown(error)) {
    // The write may or may not have landed: the client must look (GET /items) before repeating it.
    return { status: 500, body: { error: errorCode(error), outcome: 'unknown', message: (error as Error).message } };
  }
  if (error instanceof ConnectionLostError) {
    // Certainly not applied (and the pool's own retries ran out): repeating the request is safe.
    return { status: 503, headers: { 'retry-after': '1' }, body: { error: error.lifelineCode, outcome: 'not-applied', message: error.message } };
  }
  if (errorCode(error) === '23505') return { status: 409, body: { error: 'an item with that name exists' } };
  console.error('request failed:', error);
  return { status: 500, body: { error: 'internal' } };
}

function send(res: http.ServerResponse, reply: Reply): void {
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...reply.headers });
  res.end(text);
}

/** Stops taking requests, lets those in flight finish (bounded), then ends the pool. */
async function shutdown(server: http.Server, pool: Pool): Promise<void> {
  if (server.listening) {
    const force = setTimeout(() => server.closeAllConnections(), DRAIN_MS);
    // close() also closes idle keep-alive sockets, then waits for requests in flight.
    await new Promise((resolve) => server.close(resolve));
    clearTimeout(force);
  }
  // end() waits up to shutdownTimeoutMillis for checked-out clients, then closes every connection.
  await pool.end();
}

/** Resolves at the first SIGINT or SIGTERM; a second one kills the process as usual. */
function signalled(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', on).off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on).on('SIGTERM', on);
  });
}

/** Requests through two rounds of terminated sessions: every one must succeed. */
async function runSelfCheck(base: string, url: string, pool: Pool): Promise<void> {
  const checks = new Checks();
  const run = Date.now().toString(36); // item names of this run, unique on a reused database
  let created = 0;
  const call = async (method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> => {
    const init: RequestInit = body === undefined ? { method } : { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
    const res = await fetch(`${base}${path}`, init);
    return { status: res.status, body: await res.json() };
  };
  const create = async (name: string): Promise<number> => {
    const { status } = await call('POST', '/items', { name: `${run}-${name}` });
    if (status === 201) created++;
    return status;
  };

  const first = await Promise.all(['tea', 'coffee', 'cocoa'].map((name) => create(name)));
  checks.ok('POST /items creates items', first.every((s) => s === 201), first.join(' '));
  const list = await call('GET', '/items');
  checks.ok('GET /items lists them', list.status === 200 && (list.body as Item[]).filter((i) => i.name.startsWith(`${run}-`)).length === 3);
  const healthy = await call('GET', '/health');
  checks.ok('GET /health reports the pool', healthy.status === 200 && typeof (healthy.body as { pool?: { total?: unknown } }).pool?.total === 'number');
  const mapped = [(await create('tea')) === 409, (await call('POST', '/items', {})).status === 400, (await call('GET', '/nope')).status === 404];
  checks.ok('errors map to 409, 400 and 404', mapped.every(Boolean));

  const idleKilled = await terminateApp(url, APP);
  const afterIdle = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? create(`idle-${i}`) : call('GET', '/items').then((r) => r.status))));
  checks.ok(`${idleKilled} idle session(s) terminated, then 20 requests`, idleKilled > 0 && afterIdle.every((s) => s < 300), `statuses ${[...new Set(afterIdle)].join(' ')}`);

  // Eight clients keep requests in flight while every session is terminated, twice.
  const statuses: number[] = [];
  const started = Date.now();
  const client = async (n: number): Promise<void> => {
    for (let i = 0; i < 500 && Date.now() < started + 1_500; i++) {
      statuses.push(i % 3 === 0 ? await create(`load-${n}-${i}`) : (await call('GET', i % 3 === 1 ? '/items' : '/health')).status);
    }
  };
  const load = Promise.all(Array.from({ length: 8 }, (_, n) => client(n)));
  let busyKilled = 0;
  for (const at of [300, 900]) {
    await delay(Math.max(0, started + at - Date.now()));
    busyKilled += await terminateApp(url, APP);
  }
  await load;
  const failed = statuses.filter((s) => s >= 300).length;
  checks.ok(`${busyKilled} busy session(s) terminated under ${statuses.length} requests`, busyKilled > 0 && failed === 0, `${failed} failed`);

  const { rows } = await pool.query<{ items: number; events: number }>({
    text: `SELECT count(*)::int AS items, (SELECT count(*)::int FROM item_events e JOIN items i ON i.id = e.item_id WHERE i.name LIKE $1) AS events
             FROM items WHERE name LIKE $1`,
    values: [`${run}-%`],
    idempotent: true,
  });
  const counts = rows[0];
  checks.ok('every acknowledged item saved once, with its event', counts?.items === created && counts.events === created, `${counts?.items} items, ${counts?.events} events, ${created} acknowledged`);
  const stats = pool.stats();
  console.log(`pool: ${stats.evictions.died} connections died, ${stats.failedValidations} failed checks, ${stats.retries} retries`);
  checks.finish();
}

async function serve(url: string): Promise<void> {
  const pool = new Pool({
    connectionString: url,
    application_name: APP,
    max: 10,
    // An HTTP caller would rather get a 503 soon than wait out the default 30 s for a connection.
    connectionTimeoutMillis: 5_000,
    // No request waits on a dead network for long: a statement is canceled after 10 s (504).
    query_timeout: 10_000,
  });
  pool.on('evict', ({ reason, diagnosis }) => {
    if (reason !== 'pool-ended') console.log(`pool: closed a connection: ${reason}${diagnosis ? ` (${diagnosis.cause})` : ''}`);
  });
  const server = http.createServer((req, res) => {
    void route(pool, req).catch(errorReply).then((reply) => send(res, reply));
  });
  try {
    await pool.query(SCHEMA);
    server.listen(selfCheck ? 0 : Number(process.env['PORT'] ?? 3000), '127.0.0.1');
    await once(server, 'listening');
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    console.log(`listening on ${base}`);
    if (selfCheck) await runSelfCheck(base, url, pool);
    else console.log(`${await signalled()}: shutting down`);
  } finally {
    await shutdown(server, pool);
    console.log('shut down: server closed, pool ended');
  }
}

await runExample(serve);
