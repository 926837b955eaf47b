// Every way pg accepts a password, as a table that test/auth.test.ts runs on pg.Pool and on
// pg-lifeline's Pool alike: an option, a function, the URL, PGPASSWORD, a .pgpass file.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { PgCluster } from './cluster.js';

export interface Login {
  readonly user: string;
  readonly password: string;
}

/** Environment variables to set (a string) or remove (undefined) while a pool is made and used. */
export type Env = Record<string, string | undefined>;

/** What one way of logging in needs: pool options, and the environment they are used in. */
export interface Setup {
  readonly options: Record<string, unknown>;
  readonly env?: Env;
}

export interface Way {
  readonly name: string;
  setup(cluster: PgCluster, login: Login, dir: string): Promise<Setup> | Setup;
}

/** host, port, database, `ssl: { ca }` when the cluster serves TLS, and `user`: everything but the password. */
export function target(cluster: PgCluster, user: string): Record<string, unknown> {
  const { password: _password, ...rest } = cluster.clientConfig();
  return { ...rest, user };
}

/** A URL for `login`; with a CA file, verify-full against it (sslrootcert). */
export function url(cluster: PgCluster, login: Login, caFile = cluster.caFile, host = cluster.host): string {
  const base = `postgres://${encodeURIComponent(login.user)}:${encodeURIComponent(login.password)}@${host}:${cluster.port}/${cluster.database}`;
  return caFile === undefined ? base : `${base}?sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}`;
}

// .pgpass fields escape ':' and '\' with a backslash.
const pgpassField = (value: string | number): string => String(value).replace(/[\\:]/g, '\\$&');

let files = 0;

export const WAYS: readonly Way[] = [
  { name: 'password option', setup: (c, l) => ({ options: { ...target(c, l.user), password: l.password } }) },
  { name: 'sync password function', setup: (c, l) => ({ options: { ...target(c, l.user), password: () => l.password } }) },
  { name: 'async password function', setup: (c, l) => ({ options: { ...target(c, l.user), password: async () => l.password } }) },
  // The URL alone: its sslmode/sslrootcert say how TLS is verified.
  { name: 'connectionString', setup: (c, l) => ({ options: { connectionString: url(c, l) } }) },
  { name: 'PGPASSWORD', setup: (c, l) => ({ options: target(c, l.user), env: { PGPASSWORD: l.password } }) },
  {
    name: '.pgpass (PGPASSFILE)',
    async setup(c, l, dir) {
      const file = path.join(dir, `pgpass-${++files}`);
      const line = [c.host, c.port, c.database, l.user, l.password].map(pgpassField).join(':');
      // Anything readable by group or others is ignored, as libpq does.
      await writeFile(file, `# written by test/auth.test.ts\n${line}\n`, { mode: 0o600 });
      return { options: target(c, l.user), env: { PGPASSFILE: file } };
    },
  },
];

/**
 * Runs `fn` with `env` applied to process.env and restores every variable afterwards. Not safe
 * for tests running concurrently in one process; node:test runs one file's tests one at a time.
 */
export async function withEnv<T>(env: Env, fn: () => Promise<T>): Promise<T> {
  const saved: Env = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
  apply(env);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

function apply(env: Env): void {
  for (const [name, value] of Object.entries(env)) {
    // Deleted, not emptied: pgpass skips the file whenever PGPASSWORD exists at all.
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
}
