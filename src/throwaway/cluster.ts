import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as pg from 'pg';
import { copyTree, HARNESS_PASSWORD, MD5_ROLE, postgresOwner, runTool, template, toolCommand } from './pgbin.js';
import type { Owner } from './pgbin.js';
import { fileSize, fileTail, freePort, removeSync, waitSync } from './ports-and-files.js';
import { testCertificates } from './tls.js';
import { waitFor } from './wait.js';
import { onProcessExit } from './exit-hooks.js';

/** application_name of the harness's own admin connections, so they are never counted or killed. */
const HARNESS_APP = 'pg-lifeline-harness';
const SETTING_NAME = /^[A-Za-z_][A-Za-z0-9_.]*$/;
const PORT_ATTEMPTS = 5;

/** How a throwaway server authenticates TCP connections (the unix socket is always `trust`). */
export type ClusterAuth = 'scram-sha-256' | 'md5' | 'password' | 'trust';

export interface ClusterOptions {
  /** Extra postgresql.conf lines, e.g. `{ idle_session_timeout: '1s', max_connections: 20 }`. */
  settings?: Record<string, string | number | boolean>;
  /** Serve TLS with these files (copied into the data dir) instead of the harness's test CA's certificate. */
  ssl?: { certFile: string; keyFile: string };
  /** TLS on (the default: a certificate signed by the harness's test CA), or off. */
  tls?: boolean;
  /** TCP authentication; scram-sha-256 by default, as PostgreSQL's own default. `trust` only for a test about it. */
  auth?: ClusterAuth;
  /** Extra pg_hba.conf lines, placed before the harness's (first match wins). */
  hba?: string[];
}

/** What a client needs to reach a throwaway server: its password, and with TLS on, the CA to verify it. */
export type ClusterClientConfig = {
  host: string;
  port: number;
  user: string;
  database: string;
  password: string;
  ssl?: { ca: string };
};

/** Fills an empty data dir (owned by the postgres OS user when root) in place of the template copy. */
export type DataDirFiller = (dataDir: string) => Promise<void>;

function confValue(value: string | number | boolean): string {
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  if (typeof value === 'number') return String(value);
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

function checkName(name: string): string {
  if (!SETTING_NAME.test(name)) throw new Error(`Invalid setting name: ${JSON.stringify(name)}`);
  return name;
}

export class PgCluster {
  // Clusters whose data dir exists. pg_ctl detaches the server from our process group, so a test run
  // that dies without destroy() would leak it: the exit hook stops and removes whatever is left.
  static #live = new Set<PgCluster>();
  static #hooksInstalled = false;

  readonly host: string = '127.0.0.1';
  readonly user: string = 'postgres';
  readonly database: string = 'postgres';
  /** The superuser's password (stored as a SCRAM secret). */
  readonly password: string = HARNESS_PASSWORD;
  /** A role with an md5-hashed password, and a pg_hba.conf line that asks it for md5. */
  readonly md5Role: { readonly user: string; readonly password: string } = MD5_ROLE;
  readonly dataDir: string;
  #port = 0;
  #tls: { ca: string; caFile: string } | undefined;
  #conf = '';
  #starting = false;
  #destroying: Promise<void> | undefined;

  private constructor(dataDir: string) {
    this.dataDir = dataDir;
  }

  get port(): number {
    return this.#port;
  }

  /** The PEM of the CA that signed the server's certificate (undefined with TLS off or a custom certificate). */
  get ca(): string | undefined {
    return this.#tls?.ca;
  }

  /** The CA file, for `sslrootcert` (undefined with TLS off or a custom certificate). */
  get caFile(): string | undefined {
    return this.#tls?.caFile;
  }

  static async start(options: ClusterOptions = {}): Promise<PgCluster> {
    const source = await template();
    return PgCluster.#create((dataDir, owner) => copyTree(source, dataDir, owner), options);
  }

  /**
   * Like start(), but `fill` writes the data dir (e.g. pg_basebackup of another cluster) instead of
   * copying the template. Whatever postgresql.conf `fill` leaves is kept; the harness settings, this
   * cluster's own socket dir and a fresh port are appended after it, so they win. postgresql.auto.conf
   * (e.g. primary_conninfo from pg_basebackup -R) is left alone.
   */
  static async startFromDataDir(fill: DataDirFiller, options: ClusterOptions = {}): Promise<PgCluster> {
    return PgCluster.#create((dataDir) => fill(dataDir), options);
  }

  static async #create(
    fill: (dataDir: string, owner: Owner | null) => Promise<void>,
    options: ClusterOptions,
  ): Promise<PgCluster> {
    const cluster = new PgCluster(await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-')));
    PgCluster.#track(cluster); // in the same tick as mkdtemp, so the exit hook always knows the dir
    try {
      await cluster.#init(fill, options);
      await cluster.#startOnFreePort();
    } catch (error) {
      await cluster.destroy();
      throw error;
    }
    return cluster;
  }

  static #track(cluster: PgCluster): void {
    PgCluster.#live.add(cluster);
    if (PgCluster.#hooksInstalled) return;
    PgCluster.#hooksInstalled = true;
    onProcessExit(() => PgCluster.#stopLeftovers());
  }

  static #stopLeftovers(): void {
    for (const cluster of PgCluster.#live) {
      try {
        // A pg_ctl start in flight outlives us and its server would appear after we are gone.
        const pidFile = path.join(cluster.dataDir, 'postmaster.pid');
        if (cluster.#starting) waitSync(() => existsSync(pidFile), 5_000);
        if (cluster.isRunning()) {
          const [cmd, argv] = toolCommand('pg_ctl', ['stop', '-D', cluster.dataDir, '-m', 'immediate', '-w', '-t', '10']);
          execFileSync(cmd, argv, { cwd: os.tmpdir(), stdio: 'ignore' });
        }
        // Retried as a whole: copies still in flight may add files behind rm's back.
        waitSync(() => removeSync(cluster.dataDir), 2_000);
      } catch {
        // Best effort while the process is going away; there is nobody left to report to.
      }
    }
    PgCluster.#live.clear();
  }

  async #init(fill: (dataDir: string, owner: Owner | null) => Promise<void>, options: ClusterOptions): Promise<void> {
    const owner = await postgresOwner();
    if (owner) await chown(this.dataDir, owner.uid, owner.gid);
    await fill(this.dataDir, owner);
    await this.#writeHba(options);
    const settings: Record<string, string | number | boolean> = {
      unix_socket_directories: this.dataDir,
      listen_addresses: '127.0.0.1',
      fsync: false,
      synchronous_commit: false,
      full_page_writes: false,
      shared_buffers: '32MB',
      max_connections: 100,
      logging_collector: false,
    };
    let ssl = options.ssl;
    if (!ssl && options.tls !== false) {
      const certificates = await testCertificates();
      this.#tls = { ca: certificates.ca, caFile: certificates.caFile };
      ssl = certificates;
    }
    if (ssl) {
      await PgCluster.#installSsl(this.dataDir, ssl);
      Object.assign(settings, { ssl: true, ssl_cert_file: 'server.crt', ssl_key_file: 'server.key' });
    }
    Object.assign(settings, options.settings);
    const lines = Object.entries(settings).map(([name, value]) => `${checkName(name)} = ${confValue(value)}`);
    const base = await readFile(path.join(this.dataDir, 'postgresql.conf'), 'utf8');
    this.#conf = `${base}\n# pg-lifeline harness\n${lines.join('\n')}\n`;
  }

  /** The whole file, so a data dir copied from another cluster (pg_basebackup) gets this cluster's rules. */
  async #writeHba(options: ClusterOptions): Promise<void> {
    const auth = options.auth ?? 'scram-sha-256';
    const lines = [
      'local all all trust',
      ...(options.hba ?? []),
      ...['127.0.0.1/32', '::1/128'].flatMap((net) => [
        `host all ${MD5_ROLE.user} ${net} ${auth === 'trust' ? 'trust' : 'md5'}`,
        `host all all ${net} ${auth}`,
        `host replication all ${net} ${auth}`,
      ]),
    ];
    const file = path.join(this.dataDir, 'pg_hba.conf');
    await writeFile(file, `# pg-lifeline harness\n${lines.join('\n')}\n`, { mode: 0o600 });
    const owner = await postgresOwner();
    if (owner) await chown(file, owner.uid, owner.gid);
  }

  static async #installSsl(dataDir: string, ssl: { certFile: string; keyFile: string }): Promise<void> {
    const owner = await postgresOwner();
    for (const [from, to] of [
      [ssl.certFile, 'server.crt'],
      [ssl.keyFile, 'server.key'],
    ] as const) {
      const target = path.join(dataDir, to);
      await copyFile(from, target);
      await chmod(target, 0o600); // the server refuses a key readable by others
      if (owner) await chown(target, owner.uid, owner.gid);
    }
  }

  /** A port can be taken between probing and binding, so a failed bind retries on a fresh port. */
  async #startOnFreePort(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      this.#port = await freePort();
      await writeFile(path.join(this.dataDir, 'postgresql.conf'), `${this.#conf}port = ${this.#port}\n`);
      const logStart = fileSize(this.#logFile);
      try {
        await this.#pgCtl(['start', '-w', '-l', this.#logFile]);
        return;
      } catch (error) {
        const log = await fileTail(this.#logFile, logStart);
        if (attempt >= PORT_ATTEMPTS || !/could not bind|Address already in use/i.test(log)) throw error;
      }
    }
  }

  get #logFile(): string {
    return path.join(this.dataDir, 'server.log');
  }

  async #pgCtl(args: string[]): Promise<void> {
    this.#starting = args[0] !== 'stop';
    try {
      await runTool('pg_ctl', [...args.slice(0, 1), '-D', this.dataDir, ...args.slice(1)]);
    } catch (error) {
      const detail = (error as { stderr?: string }).stderr?.trim() || (error as Error).message;
      const log = await fileTail(this.#logFile);
      throw new Error(`pg_ctl ${args[0]} failed for ${this.dataDir}: ${detail}\n--- server.log (tail) ---\n${log}`, {
        cause: error,
      });
    } finally {
      this.#starting = false;
    }
  }

  /** A URL with the password, and with TLS on, `sslmode=verify-full` against the test CA. */
  connectionString(database: string = this.database): string {
    const url = `postgres://${this.user}:${encodeURIComponent(this.password)}@${this.host}:${this.port}/${encodeURIComponent(database)}`;
    return this.#tls ? `${url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(this.#tls.caFile)}` : url;
  }

  /** Options for pg.Client or a pool: the password, and with TLS on, `ssl: { ca }` (verified). */
  clientConfig(): ClusterClientConfig {
    const config: ClusterClientConfig = { host: this.host, port: this.port, user: this.user, database: this.database, password: this.password };
    if (this.#tls) config.ssl = { ca: this.#tls.ca };
    return config;
  }

  async #withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ ...this.clientConfig(), application_name: HARNESS_APP, connectionTimeoutMillis: 10_000 });
    client.on('error', () => {}); // failures also reject the pending call, which reports them
    try {
      await client.connect();
      return await fn(client);
    } finally {
      await client.end().catch(() => {});
    }
  }

  query<R = any>(sql: string, values?: unknown[]): Promise<R[]> {
    return this.#withAdmin(async (client) => (await client.query(sql, values)).rows as R[]);
  }

  /** Client backends, optionally of one application_name. Without a name, every harness admin connection is excluded. */
  backendPids(applicationName?: string): Promise<number[]> {
    return this.#withAdmin((client) => this.#backendPids(client, applicationName));
  }

  async #backendPids(client: pg.Client, applicationName: string | undefined): Promise<number[]> {
    const { rows } = await client.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND CASE WHEN $1::text IS NULL THEN application_name <> $2 ELSE application_name = $1 END
        ORDER BY pid`,
      [applicationName ?? null, HARNESS_APP],
    );
    return rows.map((row) => row.pid);
  }

  terminateBackends(applicationName?: string): Promise<number> {
    return this.#withAdmin(async (client) => {
      const targets = await this.#backendPids(client, applicationName);
      const { rows } = await client.query<{ pid: number }>(
        'SELECT pid FROM unnest($1::int[]) AS pid WHERE pg_terminate_backend(pid)',
        [targets],
      );
      const killed = rows.map((row) => row.pid);
      // pg_terminate_backend only sends a signal; callers expect the backends to be gone.
      await waitFor(`backends ${killed.join(', ')} to exit`, async () => {
        const left = await client.query('SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1::int[])', [killed]);
        return left.rowCount === 0;
      });
      return killed.length;
    });
  }

  async restart(mode: 'fast' | 'immediate'): Promise<void> {
    await this.#pgCtl(['restart', '-m', mode, '-w', '-l', this.#logFile]);
  }

  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.#pgCtl(['stop', '-m', mode, '-w']);
  }

  crash(): Promise<void> {
    return this.stop('immediate');
  }

  async startAgain(): Promise<void> {
    await this.#pgCtl(['start', '-w', '-l', this.#logFile]);
  }

  /** Whether the postmaster recorded in postmaster.pid is alive (also right after an external kill -9). */
  isRunning(): boolean {
    let pid: number;
    try {
      pid = Number(readFileSync(path.join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n', 1)[0]);
    } catch {
      return false;
    }
    try {
      process.kill(pid, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  }

  /** Postmaster-context settings (max_connections, ...) are written but only apply after restart(). */
  setSetting(name: string, value: string | number): Promise<void> {
    const literal = `'${String(value).replace(/'/g, "''")}'`;
    return this.#alterSystem(`ALTER SYSTEM SET ${checkName(name)} = ${literal}`);
  }

  resetSetting(name: string): Promise<void> {
    return this.#alterSystem(`ALTER SYSTEM RESET ${checkName(name)}`);
  }

  /**
   * Waits until a new connection has loaded the configuration written after `statement`. Comparing
   * current_setting() with the requested value is unreliable (the server normalises '1000ms' to '1s'),
   * so this compares pg_conf_load_time(), which new backends inherit from the postmaster.
   */
  async #alterSystem(statement: string): Promise<void> {
    const written = await this.#withAdmin(async (client) => {
      await client.query(statement);
      const { rows } = await client.query<{ now: string }>('SELECT clock_timestamp()::text AS now');
      await client.query('SELECT pg_reload_conf()');
      return rows[0]?.now;
    });
    await waitFor(`${this.dataDir} to reload its configuration`, async () => {
      const rows = await this.query<{ reloaded: boolean }>('SELECT pg_conf_load_time() > $1::timestamptz AS reloaded', [written]);
      return rows[0]?.reloaded === true;
    });
  }

  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      if (this.isRunning()) await this.stop('fast').catch(() => this.stop('immediate'));
      PgCluster.#live.delete(this);
      await rm(this.dataDir, { recursive: true, force: true });
    })();
    // A failed destroy stays in `live` for the exit hook and may be retried.
    this.#destroying.catch(() => (this.#destroying = undefined));
    return this.#destroying;
  }
}
