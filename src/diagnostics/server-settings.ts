import type * as pg from 'pg';

/** The server settings that decide when it, or the network, ends a connection. Milliseconds; 0 is off. */
export interface ServerSettings {
  readonly idleSessionTimeoutMillis: number;
  readonly idleInTransactionSessionTimeoutMillis: number;
  readonly statementTimeoutMillis: number;
  /** TCP keepalive on the server's side; 0 means the OS default. */
  readonly tcpKeepalivesIdleMillis: number;
  readonly tcpKeepalivesIntervalMillis: number;
  readonly tcpKeepalivesCount: number;
  /** When the server last started (`pg_postmaster_start_time()`), as epoch milliseconds. */
  readonly startedAt: number;
}

const NAMES = ['idle_session_timeout', 'idle_in_transaction_session_timeout', 'statement_timeout', 'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count'];

// One round trip on the first connection to each host; pg_settings gives values with their units.
const SQL =
  'SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1) ' +
  "UNION ALL SELECT 'start', (extract(epoch FROM pg_postmaster_start_time()) * 1000)::bigint::text, 'ms'";

const UNIT_MILLIS: Record<string, number> = { ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** Reads the settings on a freshly opened client. */
export async function readServerSettings(client: pg.Client): Promise<ServerSettings> {
  const rows = (await client.query<{ name: string; setting: string; unit: string | null }>(SQL, [NAMES])).rows;
  const value = (name: string): number => {
    const row = rows.find((r) => r.name === name);
    return row === undefined ? 0 : Number(row.setting) * (row.unit === null ? 1 : (UNIT_MILLIS[row.unit] ?? 1));
  };
  return Object.freeze({
    idleSessionTimeoutMillis: value('idle_session_timeout'),
    idleInTransactionSessionTimeoutMillis: value('idle_in_transaction_session_timeout'),
    statementTimeoutMillis: value('statement_timeout'),
    tcpKeepalivesIdleMillis: value('tcp_keepalives_idle'),
    tcpKeepalivesIntervalMillis: value('tcp_keepalives_interval'),
    tcpKeepalivesCount: value('tcp_keepalives_count'),
    startedAt: value('start'),
  });
}
