import type { ResolvedConfig } from '../config.js';
import { now, type ResourcePool } from '../core/resource-pool.js';
import type { EvictionReason } from '../stats.js';
import { isConnectionError } from './classify.js';
import type { PgConnection } from './connection.js';
import { awaitingReadyForQuery, hasQueryInFlight, inFlightRunsAlone, onReadyForQuery } from './internals.js';

/** What taking a connection back needs from the pool. */
export interface CheckinHost {
  readonly core: ResourcePool<PgConnection>;
  evict(connection: PgConnection, reason: EvictionReason, error: unknown): void;
}

/**
 * Takes a connection back from its user and decides its fate: back to the pool, rolled back
 * first, or closed. The next user must always get a clean, idle session.
 */
export function checkin(host: CheckinHost, config: ResolvedConfig, connection: PgConnection, error: unknown): void {
  if (connection.state !== 'leased') return host.evict(connection, 'died', connection.failure);
  if (error) return host.evict(connection, isConnectionError(error) ? 'died' : 'released-with-error', error);
  if (hasQueryInFlight(connection.client)) {
    // A cursor or stream left open would wait for its reader for ever, and run into the next user's work.
    if (!inFlightRunsAlone(connection.client)) return host.evict(connection, 'query-in-flight', undefined);
    // As on pg, statements already sent run to their end; nobody else gets the session until then.
    // It stays leased meanwhile: busy, and watched by the monitor like any statement in flight.
    return afterStatements(host, config, connection);
  }
  settle(host, config, connection);
}

// Waits out each statement's ReadyForQuery in turn. A connection that dies meanwhile answers
// the wait (internals' answerReadyForQueryWaiters), so this always ends.
function afterStatements(host: CheckinHost, config: ResolvedConfig, connection: PgConnection): void {
  onReadyForQuery(connection.client, () => {
    if (connection.state !== 'leased') return host.evict(connection, 'died', connection.failure);
    if (hasQueryInFlight(connection.client)) return afterStatements(host, config, connection);
    settle(host, config, connection);
  });
}

// The connection is quiet: reuse it, roll it back, or retire it.
function settle(host: CheckinHost, config: ResolvedConfig, connection: PgConnection): void {
  if (host.core.closed) return host.evict(connection, 'pool-ended', undefined);
  if (connection.uses >= config.maxUses) return host.evict(connection, 'max-uses', undefined);
  const t = now();
  if (t >= connection.retireAt) return host.evict(connection, 'lifetime', undefined);
  connection.idleSince = t;
  connection.checkedAt = t;
  if (awaitingReadyForQuery(connection.client)) return returnWhenReady(host, config, connection);
  if (connection.transactionStatus() !== 'I') return rollBack(host, config, connection);
  host.core.release(connection);
}

// The transaction status is only true once the last statement's ReadyForQuery is in.
function returnWhenReady(host: CheckinHost, config: ResolvedConfig, connection: PgConnection): void {
  host.core.hold(connection);
  // A connection that dies meanwhile never sends it; the timer then frees the slot.
  const timer = setTimeout(() => {
    connection.destroy();
    host.evict(connection, 'died', connection.failure);
  }, config.validationTimeoutMillis);
  onReadyForQuery(connection.client, () => {
    clearTimeout(timer);
    if (connection.state !== 'checking') return host.evict(connection, 'died', connection.failure);
    if (connection.transactionStatus() !== 'I') return rollBack(host, config, connection);
    host.core.release(connection);
  });
}

// An open transaction is rolled back before anyone else gets the session.
function rollBack(host: CheckinHost, config: ResolvedConfig, connection: PgConnection): void {
  host.core.hold(connection);
  const timer = setTimeout(() => connection.destroy(), config.validationTimeoutMillis);
  connection.client.query('ROLLBACK').then(
    () => {
      clearTimeout(timer);
      if (connection.state === 'checking' && connection.transactionStatus() === 'I') host.core.release(connection);
      else host.evict(connection, 'dirty-session', connection.failure);
    },
    (error: unknown) => {
      clearTimeout(timer);
      host.evict(connection, 'dirty-session', error);
    },
  );
}
