import { createRequire } from 'node:module';
import type { parse as PgParse } from 'pg-connection-string';
import { ConfigError } from '../errors.js';
import { conninfoHosts, isPgOnlyForm, readConninfo, type Conninfo } from './conninfo.js';

/** Which servers a connection may be opened to, by their role (libpq's `target_session_attrs`). */
export type TargetSessionAttrs = 'any' | 'read-write' | 'read-only' | 'primary' | 'standby' | 'prefer-standby' | 'prefer-primary';

const ATTRS: ReadonlySet<string> = new Set(['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby', 'prefer-primary']);

/** One server to try, with the client options that reach it. */
export interface HostTarget {
  readonly host: string;
  readonly port: number;
  /** `host:port`, for messages and per-host state. */
  readonly key: string;
  /** What a pg client for this host is constructed with (never the password: the connection adds it). */
  readonly clientOptions: Readonly<Record<string, unknown>>;
}

/** The multi-host settings found in the options and the connection string. */
export interface HostSettings {
  readonly targets: readonly HostTarget[];
  readonly targetSessionAttrs: TargetSessionAttrs;
  readonly loadBalanceHosts: boolean;
  /** The password the connection string gives, if it gives one; it wins over the `password` option. */
  readonly password: string | undefined;
}

interface HostOptions {
  readonly connectionString?: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | string | undefined;
  readonly hosts?: readonly { readonly host: string; readonly port?: number | undefined }[] | undefined;
  readonly targetSessionAttrs?: string | undefined;
  readonly loadBalanceHosts?: string | boolean | undefined;
}

/** A PG* environment variable; empty counts as unset, as in libpq and pg (`PGPORT=` from docker-compose). */
function env(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value === '' ? undefined : value;
}

// libpq keywords pg reads from its config under the same name; dbname is pg's `database`.
const PASSED_THROUGH = ['user', 'options', 'application_name', 'fallback_application_name', 'client_encoding', 'replication', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout'];
// What pg's parser turns into its `ssl` option (and reads its files for).
const SSL_KEYWORDS = ['ssl', 'sslmode', 'sslcert', 'sslkey', 'sslrootcert', 'sslnegotiation', 'uselibpqcompat'];

/**
 * Finds every host to try, from `hosts: [{ host, port }]`, a connection string in either of libpq's
 * forms (read as libpq reads it: src/postgres/conninfo.ts), or `host: 'h1,h2'`. Each host gets its
 * own client options, built from the string's values: pg reads one host per client. Values the
 * string leaves out come from the options, then (in pg) the environment and pg's defaults.
 */
export function resolveHosts(options: HostOptions & Record<string, unknown>): HostSettings {
  const connectionString = options.connectionString;
  if (connectionString !== undefined && typeof connectionString !== 'string') throw new ConfigError('connectionString', 'a string', typeof connectionString);
  const pgOnly = connectionString !== undefined && connectionString !== '' && isPgOnlyForm(connectionString);
  const info: Conninfo = connectionString === undefined || connectionString === '' || pgOnly ? new Map() : readConninfo(connectionString);
  const attrs = options.targetSessionAttrs ?? info.get('target_session_attrs') ?? env('PGTARGETSESSIONATTRS') ?? 'any';
  if (typeof attrs !== 'string' || !ATTRS.has(attrs)) throw new ConfigError('targetSessionAttrs', `one of ${[...ATTRS].join(', ')}`, attrs);
  const balance = options.loadBalanceHosts ?? info.get('load_balance_hosts') ?? env('PGLOADBALANCEHOSTS') ?? 'disable';
  if (balance !== true && balance !== false && balance !== 'random' && balance !== 'disable') {
    throw new ConfigError('loadBalanceHosts', "'random' or 'disable'", balance);
  }

  const optionPort = options.port === '' ? undefined : options.port;
  // Read only where one port is meant: `port` may also be a list, one per host of `host`.
  const defaultPort = (): number => (optionPort !== undefined ? portOf('port', optionPort) : portOf('PGPORT', env('PGPORT') ?? 5432));
  const base: Record<string, unknown> = { ...options };
  delete base['hosts'];
  // The password is not among these options: the connection passes it to each client itself.
  delete base['password'];
  const target = (host: string, port: number, clientOptions: Record<string, unknown>): HostTarget => {
    return Object.freeze({ host, port, key: `${host}:${port}`, clientOptions: Object.freeze(clientOptions) });
  };
  const targets: HostTarget[] = [];
  if (options.hosts !== undefined) {
    if (!Array.isArray(options.hosts) || options.hosts.length === 0) throw new ConfigError('hosts', 'a non-empty array of { host, port }', options.hosts);
    for (const entry of options.hosts) {
      if (typeof entry?.host !== 'string' || entry.host === '') throw new ConfigError('hosts', 'entries with a host name', entry);
      const port = portOf('hosts', entry.port ?? defaultPort());
      targets.push(target(entry.host, port, { ...base, ...stringOptions(info), connectionString: undefined, host: entry.host, port }));
    }
  } else if (pgOnly) {
    // A form only pg reads (socket:/dir?db=x, pg://...): pg reads it, exactly as pg.Pool would.
    const parsed = readByPg(connectionString as string);
    const host = parsed.host || env('PGHOST') || 'localhost';
    targets.push(target(host, parsed.port ? portOf('connectionString', parsed.port) : defaultPort(), { ...base, connectionString }));
  } else if (connectionString !== undefined && connectionString !== '') {
    const own = stringOptions(info);
    for (const entry of conninfoHosts(info)) {
      // libpq connects to hostaddr when given; pg knows only host.
      const host = entry.hostaddr || entry.host || optionHost(options) || env('PGHOST') || 'localhost';
      const port = entry.port === '' ? defaultPort() : portOf('connectionString', entry.port);
      targets.push(target(host, port, { ...base, ...own, connectionString: undefined, host, port }));
    }
  } else {
    const hostList = optionHost(options) ?? env('PGHOST') ?? 'localhost';
    const names = hostList.split(',');
    const ports = String(optionPort ?? env('PGPORT') ?? 5432).split(',');
    if (ports.length !== 1 && ports.length !== names.length) throw new ConfigError('port', `one port, or one per host (${names.length})`, options.port);
    names.forEach((name, i) => {
      const port = portOf(optionPort === undefined ? 'PGPORT' : 'port', ports[ports.length === 1 ? 0 : i]);
      targets.push(target(name.trim(), port, names.length === 1 && optionHost(options) === undefined ? base : { ...base, host: name.trim(), port }));
    });
  }
  return { targets, targetSessionAttrs: attrs as TargetSessionAttrs, loadBalanceHosts: balance === true || balance === 'random', password: info.get('password') };
}

function optionHost(options: HostOptions): string | undefined {
  return typeof options.host === 'string' && options.host !== '' ? options.host : undefined;
}

/** A port as libpq accepts it (a whole number, spaces around allowed), from 1 to 65535. */
function portOf(option: string, value: unknown): number {
  const port = typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : value;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(option, 'ports from 1 to 65535', option === 'connectionString' ? 'a port outside that range' : value);
  }
  return port;
}

/** The pg client options a libpq reading gives, other than host, port and password. */
function stringOptions(info: Conninfo): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const keyword of PASSED_THROUGH) {
    const value = info.get(keyword);
    if (value !== undefined) out[keyword] = value;
  }
  const dbname = info.get('dbname');
  if (dbname !== undefined) out['database'] = dbname;
  const ssl = SSL_KEYWORDS.filter((keyword) => info.has(keyword)).map((keyword): [string, string] => [keyword, info.get(keyword) as string]);
  if (ssl.length > 0) {
    // pg's own reading of its TLS keywords (sslmode's meaning in pg, the certificate files loaded).
    const parsed = readByPg(`postgres://localhost/?${new URLSearchParams(ssl).toString()}`);
    if (parsed.ssl !== undefined) out['ssl'] = parsed.ssl;
    if (parsed.sslnegotiation !== undefined) out['sslnegotiation'] = parsed.sslnegotiation;
  }
  return out;
}

let pgParse: typeof PgParse | undefined;

// pg's own parser, loaded from beside the app's pg (whose dependency it is), so it reads exactly as
// that pg does; not bundled into pg-lifeline.
function pgParser(): typeof PgParse {
  if (pgParse === undefined) {
    const here = createRequire(import.meta.url);
    pgParse = (createRequire(here.resolve('pg'))('pg-connection-string') as { parse: typeof PgParse }).parse;
  }
  return pgParse;
}

function readByPg(text: string): ReturnType<typeof PgParse> {
  try {
    return pgParser()(text);
  } catch (error) {
    // pg's messages name a missing certificate file, never the string itself.
    const reason = error instanceof Error && /^(ENOENT|EACCES|EISDIR)/.test((error as NodeJS.ErrnoException).code ?? '') ? error.message : 'a string pg cannot read';
    throw new ConfigError('connectionString', 'a connection string pg-lifeline can read', reason);
  }
}
