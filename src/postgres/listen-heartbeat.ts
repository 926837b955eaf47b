// What the LISTEN session asks its server to prove it is still worth trusting, and how often.
import type * as pg from 'pg';
import { ListenError } from '../errors.js';
import { quoteChannel } from './listen-errors.js';

// Asks three things in one round trip: is the session alive, is it still on a primary (LISTEN fails
// on a standby), and does it still listen (a transaction-mode pooler drops LISTEN between transactions).
const HEARTBEAT_SQL = 'SELECT pg_is_in_recovery() AS standby, array(SELECT pg_listening_channels())::text[] AS channels';
// In milliseconds; no row before PostgreSQL 14, which has no such timeout.
const IDLE_TIMEOUT_SQL = "SELECT setting::int AS ms FROM pg_settings WHERE name = 'idle_session_timeout'";

/** What a heartbeat checks the answer against. */
export interface HeartbeatFacts {
  readonly timeoutMillis: number;
  /** On a multi-host pool a session on a standby has failed over and must move. */
  readonly multiHost: boolean;
  /** The channels the session believes it listens to. */
  readonly active: ReadonlySet<string>;
}

/**
 * Runs one heartbeat on `client`. Resolves when the session is alive, on the right server and still
 * listening to every channel in `facts.active`; rejects with why it can no longer be trusted.
 */
export async function proveSession(client: pg.Client, facts: HeartbeatFacts): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`LISTEN session heartbeat got no answer within ${facts.timeoutMillis} ms`)), facts.timeoutMillis);
    });
    const result = await Promise.race([client.query<{ standby: boolean; channels: string[] }>(HEARTBEAT_SQL), deadline]);
    const row = result.rows[0];
    // Failed over: this server is a standby now, where notifications are never sent.
    if (row?.standby === true && facts.multiHost) throw new Error('the LISTEN session is on a server that became a standby');
    const listening = new Set(row?.channels ?? []);
    const dropped = [...facts.active].filter((channel) => !listening.has(channel));
    if (dropped.length > 0) {
      throw new ListenError(
        `The session no longer listens to ${dropped.map(quoteChannel).join(', ')}: a pooler in transaction mode (PgBouncer, Supavisor) drops LISTEN between transactions. Point the pool at the server directly or at a session-mode pool for LISTEN.`,
        undefined,
      );
    }
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How often to prove the session: `configuredMillis`, or less than half the server's
 * `idle_session_timeout` where that is shorter, since a quieter session would be ended for idling.
 */
export async function heartbeatMillis(client: pg.Client, configuredMillis: number): Promise<number> {
  const idleMillis = (await client.query<{ ms: number }>(IDLE_TIMEOUT_SQL)).rows[0]?.ms ?? 0;
  return idleMillis > 0 ? Math.min(configuredMillis, Math.max(1, Math.floor(idleMillis * 0.45))) : configuredMillis;
}
