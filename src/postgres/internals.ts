import { EventEmitter } from 'node:events';
import { connect } from 'node:net';
import type * as pg from 'pg';

/**
 * The only file that reads node-postgres internals. Each reader falls back to a safe answer
 * when a field is missing (pg-native, or a pg version that renamed it).
 */

interface ClientInternals {
  readyForQuery?: boolean;
  processID?: number | null;
  secretKey?: number | null;
  host?: string;
  port?: number;
  getTransactionStatus?: () => string | null;
  _txStatus?: string | null;
  _activeQuery?: unknown;
  activeQuery?: unknown;
  _queryQueue?: unknown[];
  _sentQueryQueue?: unknown[];
  _ending?: boolean;
  _queryable?: boolean;
  queryQueue?: unknown[];
  connection?: {
    stream?: { destroy(): void; destroyed?: boolean };
    on?(event: string, listener: (msg: { status?: string }) => void): void;
    once?(event: string, listener: () => void): void;
  };
  ref?: () => void;
  unref?: () => void;
}

/** Session transaction status from the last ReadyForQuery: 'I' idle, 'T' in a transaction, 'E' failed one. */
export type TransactionStatus = 'I' | 'T' | 'E';

/**
 * Returns a reader of the client's transaction status. pg 8.21+ exposes it; older releases get
 * it from the protocol's ReadyForQuery messages. Unknown (pg-native) reads as 'I'.
 */
export function transactionStatusReader(client: pg.Client): () => TransactionStatus {
  const c = client as unknown as ClientInternals;
  if (typeof c.getTransactionStatus === 'function') {
    return () => (c.getTransactionStatus?.() as TransactionStatus | null) ?? 'I';
  }
  let status: TransactionStatus = 'I';
  c.connection?.on?.('readyForQuery', (msg) => {
    status = (msg.status as TransactionStatus | undefined) ?? 'I';
  });
  return () => status;
}

/** True when a query is running, sent (pipeline mode) or queued: such a client cannot be handed to anyone else. */
export function hasQueryInFlight(client: pg.Client): boolean {
  const { active, sent, queued } = queriesOf(client);
  return active !== null || sent.length > 0 || queued.length > 0;
}

// pg 8.20+ renamed these and deprecated the old names, so the old ones are read only as a fallback.
function queriesOf(client: pg.Client): { active: unknown; sent: unknown[]; queued: unknown[] } {
  const c = client as unknown as ClientInternals;
  const modern = '_activeQuery' in c;
  return { active: (modern ? c._activeQuery : c.activeQuery) ?? null, sent: c._sentQueryQueue ?? [], queued: (modern ? c._queryQueue : c.queryQueue) ?? [] };
}

/**
 * True when every statement in flight is one of pg's own queries, which run to their end unaided.
 * A cursor, stream or COPY (any other Submittable) advances only when its reader asks, and that
 * reader has given the client back. Unknown internals read as false.
 */
export function inFlightRunsAlone(client: pg.Client): boolean {
  const Query = (client.constructor as { Query?: unknown }).Query;
  if (typeof Query !== 'function') return false;
  const { active, sent, queued } = queriesOf(client);
  return [active, ...sent, ...queued].every((query) => query === null || query instanceof Query);
}

/** True once the app called `client.end()` or the client stopped being queryable: it cannot be reused. */
export function isClientFinished(client: pg.Client): boolean {
  const c = client as unknown as ClientInternals;
  return c._ending === true || c._queryable === false;
}

/**
 * True while the server's ReadyForQuery for the last statement is still to be read. pg settles a
 * failed statement on the error itself, before that message, so until it arrives the transaction
 * status is stale. Clients without the field (pg-native) never wait.
 */
export function awaitingReadyForQuery(client: pg.Client): boolean {
  const c = client as unknown as ClientInternals;
  return c.readyForQuery === false && typeof c.connection?.once === 'function';
}

/** Calls `then` when the next ReadyForQuery has been read (after pg's own handler). */
export function onReadyForQuery(client: pg.Client, then: () => void): void {
  (client as unknown as ClientInternals).connection?.once?.('readyForQuery', then);
}

/**
 * A dead connection never sends ReadyForQuery, so whoever waits for the next one would wait for
 * ever: pg-cursor's close() (which a destroyed pg-query-stream waits on), or a checkin waiting
 * to read the transaction status. Answers those waiting now, and anyone who starts waiting later.
 * Only one-shot waiters are called: pg's own permanent handler would send queued queries.
 */
export function answerReadyForQueryWaiters(client: pg.Client): void {
  const connection = (client as unknown as ClientInternals).connection;
  if (!(connection instanceof EventEmitter)) return;
  const answer = (): void => {
    for (const raw of connection.rawListeners('readyForQuery')) {
      if (typeof (raw as { listener?: unknown }).listener === 'function') (raw as () => void).call(connection);
    }
  };
  answer();
  // The listener is only added after 'newListener' fires, so answer on the next turn.
  connection.on('newListener', (event: string | symbol) => {
    if (event === 'readyForQuery') setImmediate(answer);
  });
}

/** Tears the socket down at once, without the graceful Terminate a half-open peer would never answer. */
export function destroySocket(client: pg.Client): void {
  (client as unknown as ClientInternals).connection?.stream?.destroy();
}

/** Lets the process exit while this client's socket is open (or stops letting it). */
export function setSocketRef(client: pg.Client, keepAlive: boolean): void {
  const c = client as unknown as ClientInternals;
  if (keepAlive) c.ref?.();
  else c.unref?.();
}

// The protocol's CancelRequest code: 1234 in the high 16 bits, 5678 in the low.
const CANCEL_REQUEST_CODE = 80877102;
const CANCEL_TIMEOUT_MILLIS = 1000;

/**
 * Asks the server to stop the statement running on `client`'s session, over a new connection as
 * the protocol requires. Resolves once the server has closed that connection (it has read the
 * request) or after a second on a dead network. Closing our side first would let a pooler such as
 * PgBouncer drop the request, or the client's session, before passing the cancel on.
 */
export function sendCancelRequest(client: pg.Client): Promise<void> {
  const c = client as unknown as ClientInternals;
  if (typeof c.processID !== 'number' || typeof c.secretKey !== 'number' || c.host === undefined || c.port === undefined) return Promise.resolve();
  const message = Buffer.alloc(16);
  message.writeInt32BE(16, 0);
  message.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  message.writeInt32BE(c.processID, 8);
  message.writeInt32BE(c.secretKey, 12);
  return new Promise((resolve) => {
    const socket = c.host?.startsWith('/') ? connect(`${c.host}/.s.PGSQL.${c.port}`) : connect(c.port as number, c.host);
    socket.setTimeout(CANCEL_TIMEOUT_MILLIS, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => resolve());
    socket.unref();
    socket.write(message);
  });
}

interface SocketInternals {
  connection?: { stream?: { bytesRead?: number } };
  processID?: number | null;
}

/**
 * Bytes read so far from the client's socket, or undefined if it cannot be told (pg-native).
 * Reading the counter costs nothing, so the maintenance loop can watch every statement in flight.
 */
export function socketBytesRead(client: pg.Client): number | undefined {
  const read = (client as unknown as SocketInternals).connection?.stream?.bytesRead;
  return typeof read === 'number' ? read : undefined;
}

/** The backend pid from the server's BackendKeyData; a pooler such as PgBouncer invents its own. */
export function protocolPid(client: pg.Client): number | undefined {
  const pid = (client as unknown as SocketInternals).processID;
  return typeof pid === 'number' ? pid : undefined;
}

/** Points a client that has not connected yet at another server: pg reads `host` and `port` when it connects. */
export function retarget(client: pg.Client, host: string, port: number): void {
  const c = client as unknown as ClientInternals;
  c.host = host;
  c.port = port;
}
