// Whether a connection pooler (PgBouncer, Supavisor, RDS Proxy...) sits between a client and its
// server. Such a pooler answers the startup with a backend pid of its own making, so it differs
// from the pid the server reports for the session.
import type * as pg from 'pg';
import { protocolPid } from './internals.js';

/** The server's own pid for the session the client is on right now. */
const OWN_PID_SQL = 'SELECT pg_backend_pid() AS pid';

/** True when the protocol's backend pid is not the server's `pg_backend_pid()`: a pooler is in between. One round trip. */
export async function behindPooler(client: pg.Client): Promise<boolean> {
  const row = (await client.query<{ pid: number }>(OWN_PID_SQL)).rows[0];
  return row?.pid !== protocolPid(client);
}
