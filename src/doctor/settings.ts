// Connection settings as libpq finds them: a connection string (URL or keyword/value form), else
// DATABASE_URL, else the PG* environment variables, which also fill whatever the string leaves out.
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { ConnectionOptions } from 'node:tls';
import type * as pg from 'pg';

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];
/** The TLS variants the doctor tries; `disable` is plain TCP. */
export type TlsVariant = 'disable' | 'require' | 'verify-ca' | 'verify-full';

export interface ConnSettings {
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  database: string;
  sslmode: SslMode;
  sslrootcert: string | undefined;
  applicationName: string;
  /** Where the settings came from: `argument`, `DATABASE_URL` or `environment`. */
  source: string;
  /** Further hosts of a multi-host string: the doctor checks the first one only. */
  otherHosts: string[];
}

/** A connection string the doctor cannot read: a usage error. */
export class SettingsError extends Error {}

type Fields = Partial<Record<'host' | 'port' | 'user' | 'password' | 'dbname' | 'sslmode' | 'sslrootcert' | 'application_name', string>>;
const KEYS = new Set(['host', 'port', 'user', 'password', 'dbname', 'sslmode', 'sslrootcert', 'application_name']);

export function resolveSettings(argument: string | undefined, env: NodeJS.ProcessEnv): ConnSettings {
  const fromEnv: Record<keyof Fields, string | undefined> = {
    host: env['PGHOST'],
    port: env['PGPORT'],
    user: env['PGUSER'],
    password: env['PGPASSWORD'],
    dbname: env['PGDATABASE'],
    sslmode: env['PGSSLMODE'],
    sslrootcert: env['PGSSLROOTCERT'],
    application_name: env['PGAPPNAME'],
  };
  const text = argument ?? (env['DATABASE_URL'] || undefined);
  const source = argument !== undefined ? 'argument' : text !== undefined ? 'DATABASE_URL' : 'environment';
  const given = text === undefined ? {} : parseConnectionString(text);
  const f: Fields = { ...definedOnly(fromEnv), ...definedOnly(given) };

  const hosts = splitList(f.host ?? 'localhost');
  const ports = splitList(f.port ?? '5432');
  const port = Number(ports[0]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new SettingsError(`invalid port ${JSON.stringify(ports[0])}`);
  const sslmode = (f.sslmode ?? 'prefer') as SslMode;
  if (!SSL_MODES.includes(sslmode)) throw new SettingsError(`invalid sslmode ${JSON.stringify(sslmode)} (one of ${SSL_MODES.join(', ')})`);
  const user = f.user || osUser();
  return {
    host: hosts[0] || 'localhost',
    port,
    user,
    password: f.password,
    database: f.dbname || user,
    sslmode,
    sslrootcert: f.sslrootcert,
    applicationName: f.application_name ?? 'pg-lifeline-doctor',
    source,
    otherHosts: hosts.slice(1).map((host, i) => `${host || 'localhost'}:${ports.length > 1 ? (ports[i + 1] ?? '5432') : port}`),
  };
}

function definedOnly(fields: Record<string, string | undefined>): Fields {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined && v !== '')) as Fields;
}

function splitList(value: string): string[] {
  return value.split(',').map((part) => part.trim());
}

function osUser(): string {
  try {
    return os.userInfo().username;
  } catch {
    return 'postgres';
  }
}

export function parseConnectionString(text: string): Fields {
  return /^postgres(ql)?:\/\//i.test(text) ? parseUrl(text) : parseKeywords(text);
}

function decode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    throw new SettingsError('the connection string has a malformed %-escape');
  }
}

function parseUrl(text: string): Fields {
  const rest = text.replace(/^postgres(ql)?:\/\//i, '').replace(/#.*$/, '');
  const queryAt = rest.indexOf('?');
  const beforeQuery = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const slash = beforeQuery.indexOf('/');
  const authority = slash < 0 ? beforeQuery : beforeQuery.slice(0, slash);
  const dbname = slash < 0 ? '' : beforeQuery.slice(slash + 1);
  const at = authority.lastIndexOf('@');
  const userinfo = at < 0 ? '' : authority.slice(0, at);
  const hostspec = at < 0 ? authority : authority.slice(at + 1);
  const fields: Fields = {};
  if (userinfo) {
    const colon = userinfo.indexOf(':');
    fields.user = decode(colon < 0 ? userinfo : userinfo.slice(0, colon));
    if (colon >= 0) fields.password = decode(userinfo.slice(colon + 1));
  }
  if (hostspec) {
    const hosts: string[] = [];
    const ports: string[] = [];
    for (const part of hostspec.split(',')) {
      const m = /^(\[[^\]]*\]|[^:]*)(?::(\d*))?$/.exec(part);
      if (!m) throw new SettingsError(`cannot read host ${JSON.stringify(part)} in the connection string`);
      hosts.push(decode((m[1] ?? '').replace(/^\[|\]$/g, '')));
      ports.push(m[2] ?? '');
    }
    if (hosts.some(Boolean)) fields.host = hosts.join(',');
    // A port given for any host is used; hosts without one get 5432. With none, PGPORT may fill in.
    if (ports.some(Boolean)) fields.port = ports.map((p) => p || '5432').join(',');
  }
  if (dbname) fields.dbname = decode(dbname);
  if (queryAt >= 0) {
    for (const pair of rest.slice(queryAt + 1).split('&')) {
      if (!pair) continue;
      const eq = pair.indexOf('=');
      const key = decode(eq < 0 ? pair : pair.slice(0, eq));
      const value = decode(eq < 0 ? '' : pair.slice(eq + 1));
      if (KEYS.has(key)) fields[key as keyof Fields] = value;
    }
  }
  return fields;
}

function parseKeywords(text: string): Fields {
  const fields: Fields = {};
  const token = /\s*([A-Za-z_]+)\s*=\s*('((?:[^'\\]|\\.)*)'|\S*)/gy;
  let consumed = 0;
  for (let m = token.exec(text); m; m = token.exec(text)) {
    const key = m[1] ?? '';
    const value = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : (m[2] ?? '');
    if (KEYS.has(key)) fields[key as keyof Fields] = value;
    consumed = token.lastIndex;
  }
  if (text.slice(consumed).trim() !== '') {
    throw new SettingsError('the connection string is neither a postgres:// URL nor key=value pairs');
  }
  return fields;
}

export function isUnixSocket(s: ConnSettings): boolean {
  return s.host.startsWith('/');
}

export function isLoopback(s: ConnSettings): boolean {
  return isUnixSocket(s) || s.host === 'localhost' || /^127\./.test(s.host) || s.host === '::1';
}

/** host:port, or the socket file. */
export function endpoint(s: ConnSettings): string {
  if (isUnixSocket(s)) return path.join(s.host, `.s.PGSQL.${s.port}`);
  return isIP(s.host) === 6 ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

/** The settings as a URL with the password masked: the only form in which they are ever shown. */
export function maskedUrl(s: ConnSettings): string {
  const auth = `${encodeURIComponent(s.user)}${s.password !== undefined ? ':****' : ''}@`;
  const params = new URLSearchParams({ sslmode: s.sslmode });
  let hostPart = isIP(s.host) === 6 ? `[${s.host}]:${s.port}` : `${encodeURIComponent(s.host)}:${s.port}`;
  if (isUnixSocket(s)) {
    hostPart = '';
    params.set('host', s.host);
    params.set('port', String(s.port));
  }
  return `postgres://${auth}${hostPart}/${encodeURIComponent(s.database)}?${params.toString()}`;
}

/** Replaces every occurrence of the password (plain or %-encoded) in `text`. */
export function scrub(text: string, s: ConnSettings): string {
  const secret = s.password;
  if (!secret || secret.length < 2) return text;
  let out = text.split(secret).join('****');
  const encoded = encodeURIComponent(secret);
  if (encoded !== secret) out = out.split(encoded).join('****');
  return out;
}

/** The CA to verify against: --ca-file, else sslrootcert, else libpq's ~/.postgresql/root.crt, else Node's store. */
export function loadCa(s: ConnSettings, caFile: string | undefined): Buffer | undefined {
  const file = caFile ?? (s.sslrootcert && s.sslrootcert !== 'system' ? s.sslrootcert : undefined);
  if (file !== undefined) {
    try {
      return readFileSync(file);
    } catch (error) {
      throw new SettingsError(`cannot read the CA file ${file}: ${(error as Error).message}`);
    }
  }
  const home = path.join(os.homedir(), '.postgresql', 'root.crt');
  return caFile === undefined && s.sslrootcert === undefined && existsSync(home) ? readFileSync(home) : undefined;
}

/** pg's `ssl` option for one variant (`servername` is set by pg itself for names, never for IPs). */
export function sslOption(variant: TlsVariant, ca: Buffer | undefined): false | ConnectionOptions {
  switch (variant) {
    case 'disable':
      return false;
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
      return { rejectUnauthorized: true, ...(ca ? { ca } : {}), checkServerIdentity: () => undefined };
    case 'verify-full':
      return { rejectUnauthorized: true, ...(ca ? { ca } : {}) };
  }
}

/** The variants to try for the user's sslmode, in order, as libpq would. */
export function variantsFor(s: ConnSettings): TlsVariant[] {
  if (isUnixSocket(s)) return ['disable'];
  switch (s.sslmode) {
    case 'disable':
      return ['disable'];
    case 'allow':
      return ['disable', 'require'];
    case 'prefer':
      return ['require', 'disable'];
    case 'require':
      return [s.sslrootcert ? 'verify-ca' : 'require'];
    case 'verify-ca':
      return ['verify-ca'];
    case 'verify-full':
      return ['verify-full'];
  }
}

export function clientConfig(s: ConnSettings, ssl: false | ConnectionOptions, timeoutMs: number): pg.ClientConfig {
  return {
    host: s.host,
    port: s.port,
    user: s.user,
    database: s.database,
    ...(s.password !== undefined ? { password: s.password } : {}),
    application_name: s.applicationName,
    ssl,
    connectionTimeoutMillis: timeoutMs,
    keepAlive: true,
  };
}
