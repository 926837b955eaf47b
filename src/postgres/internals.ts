import type pg from 'pg';

/**
 * The only file that reads node-postgres internals. Each reader falls back to a safe answer
 * when a field is missing (pg-native, or a pg version that renamed it).
 */

interface ClientInternals {
  getTransactionStatus?: () => string | null;
  _txStatus?: string | null;
  _activeQuery?: unknown;
  activeQuery?: unknown;
  _queryQueue?: unknown[];
  queryQueue?: unknown[];
  connection?: { stream?: { destroy(): void; destroyed?: boolean }; on?(event: string, listener: (msg: { status?: string }) => void): void };
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

/** True when a query is running or queued: such a client cannot be handed to anyone else. */
export function hasQueryInFlight(client: pg.Client): boolean {
  const c = client as unknown as ClientInternals;
  // pg 8.20+ renamed these and deprecated the old names, so the old ones are read only as a fallback.
  const modern = '_activeQuery' in c;
  const active = modern ? c._activeQuery : c.activeQuery;
  const queue = modern ? c._queryQueue : c.queryQueue;
  return (active ?? null) !== null || (queue !== undefined && queue.length > 0);
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
