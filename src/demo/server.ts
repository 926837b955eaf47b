// The server the demo runs against (a throwaway cluster, or --url), its tables and the admin queries.
import * as pg from 'pg';
import { findServerBinaries } from '../throwaway/binaries.js';
import { PgCluster } from '../throwaway/cluster.js';
import { TABLES } from './model.js';

export interface Target {
  /** Where the workers' proxy points and admin connections go. */
  conn: pg.ClientConfig & { host: string; port: number };
  /** Present only for a throwaway server: restart, crash and idle timeout need it. */
  cluster?: PgCluster;
  describe: string;
  /** The same login, through the fault proxy at host:port. */
  via(host: string, port: number): pg.ClientConfig;
}

export async function startThrowaway(): Promise<Target> {
  // The harness turns synchronous_commit off for speed; an acked commit could then vanish in the crash.
  const cluster = await PgCluster.start({ settings: { synchronous_commit: true } });
  const conn = cluster.clientConfig();
  return { conn, cluster, describe: `a throwaway PostgreSQL on 127.0.0.1:${cluster.port}, logged in with a scram-sha-256 password over TLS verified against its CA (${cluster.dataDir}; binaries: ${findServerBinaries().source})`, via: (host, port) => ({ ...conn, host, port }) };
}

export function urlTarget(url: string): Target {
  const parsed = new URL(url);
  return {
    conn: { connectionString: url, host: parsed.hostname || 'localhost', port: Number(parsed.port || 5432) },
    describe: `your server at ${parsed.hostname}:${parsed.port || 5432}${parsed.pathname} (--url)`,
    // pg lets a connection string's host win over `host`, so the proxy goes into the URL itself.
    via: (host, port) => {
      const proxied = new URL(url);
      proxied.hostname = host;
      proxied.port = String(port);
      return { connectionString: proxied.toString() };
    },
  };
}

/** Runs `fn` on a fresh direct connection (not through the proxy), closed afterwards. */
export async function withAdmin<T>(target: Target, fn: (client: pg.Client) => Promise<T>, appName = 'pg-lifeline-demo-admin'): Promise<T> {
  const client = new pg.Client({ ...target.conn, application_name: appName, connectionTimeoutMillis: 10_000 });
  client.on('error', () => {}); // failures also reject the pending query
  try {
    await client.connect();
    return await fn(client);
  } finally {
    await client.end().catch(() => {});
  }
}

export function createTables(target: Target): Promise<void> {
  return withAdmin(target, async (client) => {
    await client.query(`DROP TABLE IF EXISTS ${TABLES.accounts}, ${TABLES.ledger}`);
    await client.query(`CREATE TABLE ${TABLES.accounts}(id int PRIMARY KEY, balance bigint NOT NULL)`);
    await client.query(`CREATE TABLE ${TABLES.ledger}(id uuid PRIMARY KEY)`);
    await client.query(`INSERT INTO ${TABLES.accounts} SELECT g, 1000 FROM generate_series(1, 100) AS g`);
  });
}

export function dropTables(target: Target): Promise<void> {
  return withAdmin(target, async (client) => {
    await client.query(`DROP TABLE IF EXISTS ${TABLES.accounts}, ${TABLES.ledger}`);
  });
}

/** Acked writes whose row is not in the database. */
export function countMissing(target: Target, acked: string[]): Promise<number> {
  return withAdmin(target, async (client) => {
    const { rows } = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM unnest($1::uuid[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM ${TABLES.ledger} l WHERE l.id = a.id)`,
      [acked],
    );
    return rows[0]?.n ?? 0;
  });
}

/** pg_terminate_backend on every demo worker connection; resolves to how many were signalled. */
export function terminateBackends(target: Target, appPrefix: string): Promise<number> {
  return withAdmin(target, async (client) => {
    const { rows } = await client.query<{ n: number }>(
      `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
        WHERE application_name LIKE $1 AND pid <> pg_backend_pid()`,
      [`${appPrefix}%`],
    );
    return rows[0]?.n ?? 0;
  });
}
