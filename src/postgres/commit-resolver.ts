import { fullJitterDelay } from '../core/backoff.js';
import { now } from '../core/resource-pool.js';

/** Which server a transaction ran on: a failover keeps the system id but starts a new timeline. */
export interface ServerIdentity {
  readonly system: string;
  readonly timeline: string;
}

/** What is known about a transaction before its COMMIT is sent. */
export interface CommitTicket {
  /** Its transaction id; null when it wrote nothing (so its outcome does not matter). */
  readonly xid: string | null;
  readonly server: ServerIdentity | undefined;
  /** The backend that ran it. */
  readonly backendPid: number;
}

/** The answer after a connection died during COMMIT. */
export type CommitResolution =
  | { readonly status: 'committed' }
  | { readonly status: 'aborted' }
  | { readonly status: 'unknown'; readonly why: string; readonly cause?: unknown };

/** Runs one statement on a fresh connection of the same pool, bounded by `deadline`. */
export type ResolverQuery = (sql: string, values: unknown[], deadline: number) => Promise<Record<string, unknown>[]>;

/**
 * Run in the transaction just before COMMIT: its xid, assigned only if it wrote, and the server
 * process running it. That pid comes from the server, not the client: behind PgBouncer the
 * client's pid is the pooler's own invention and could name an unrelated backend. The server's
 * identity cannot change under an open connection, so it is read once per connection, with the
 * first xid (only writers need it, and standbys cannot answer it).
 */
export const TICKET_SQL = 'SELECT pg_current_xact_id_if_assigned()::text AS xid, pg_backend_pid() AS pid';
export const TICKET_WITH_SERVER_SQL =
  'SELECT x::text AS xid, pg_backend_pid() AS pid, ' +
  'CASE WHEN x IS NOT NULL THEN substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8) END AS timeline, ' +
  'CASE WHEN x IS NOT NULL THEN (SELECT system_identifier FROM pg_control_system())::text END AS system ' +
  'FROM pg_current_xact_id_if_assigned() AS x';

const IDENTITY_SQL =
  'SELECT substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8) AS timeline, ' +
  '(SELECT system_identifier FROM pg_control_system())::text AS system';

const STATUS_SQL = "SELECT pg_xact_status($1::xid8) AS status, (SELECT state FROM pg_stat_activity WHERE pid = $2) AS backend_state";

// Ends the old backend when it sits idle inside the transaction: our COMMIT never reached it, and
// ending it is what turns "in progress" into a definite abort.
const END_WAITING_BACKEND_SQL = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND state = 'idle in transaction'";

/**
 * Finds out whether the transaction of `ticket` committed, asking the server again until
 * `deadline`: `pg_xact_status` answers committed or aborted once the old backend is done with it.
 */
export async function resolveCommit(ticket: CommitTicket & { xid: string }, query: ResolverQuery, deadline: number): Promise<CommitResolution> {
  let lastError: unknown;
  for (let attempt = 0; now() < deadline; attempt++) {
    try {
      const answer = await ask(ticket, query, deadline);
      if (answer !== undefined) return answer;
    } catch (error) {
      lastError = error;
    }
    const wait = Math.min(fullJitterDelay(attempt, 20, 1000), Math.max(0, deadline - now()));
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
  return { status: 'unknown', why: 'the server could not be asked in time', cause: lastError };
}

// One round of questions; undefined means "still in progress, ask again".
async function ask(ticket: CommitTicket & { xid: string }, query: ResolverQuery, deadline: number): Promise<CommitResolution | undefined> {
  const [server] = await query(IDENTITY_SQL, [], deadline);
  if (ticket.server !== undefined && server?.['system'] !== ticket.server.system) {
    return { status: 'unknown', why: 'the server answering is a different database cluster' };
  }
  const sameTimeline = ticket.server === undefined || server?.['timeline'] === ticket.server.timeline;
  let row: Record<string, unknown> | undefined;
  try {
    [row] = await query(STATUS_SQL, [ticket.xid, ticket.backendPid], deadline);
  } catch (error) {
    // This server's history never reached that transaction id: it was never committed here (not
    // flushed before a crash, or not replicated before a promotion).
    if (error instanceof Error && /is in the future/.test(error.message)) return { status: 'aborted' };
    throw error;
  }
  if (!sameTimeline) {
    // A promoted standby continues the id sequence, so an id it knows may be another transaction's.
    return { status: 'unknown', why: `the server was promoted since (timeline ${String(server?.['timeline'])}, was ${ticket.server?.timeline}), and the id may have been reused` };
  }
  const status = row?.['status'];
  if (status === 'committed') return { status };
  if (status === 'aborted') return { status };
  if (status === null) return { status: 'unknown', why: 'the transaction id is too old for the server to remember' };
  if (row?.['backend_state'] === 'idle in transaction') await query(END_WAITING_BACKEND_SQL, [ticket.backendPid], deadline);
  return undefined;
}
