import { ConfigError } from '../errors.js';

/** Which servers a connection may be opened to, by their role (libpq's `target_session_attrs`). */
export type TargetSessionAttrs = 'any' | 'read-write' | 'read-only' | 'primary' | 'standby' | 'prefer-standby' | 'prefer-primary';

const ATTRS: ReadonlySet<string> = new Set(['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby', 'prefer-primary']);

/** One server to try, with the client options that reach it. */
export interface HostTarget {
  readonly host: string;
  readonly port: number;
  /** `host:port`, for messages and per-host state. */
  readonly key: string;
  /** What a pg client for this host is constructed with. */
  readonly clientOptions: Readonly<Record<string, unknown>>;
}

/** The multi-host settings found in the options and the connection string. */
export interface HostSettings {
  readonly targets: readonly HostTarget[];
  readonly targetSessionAttrs: TargetSessionAttrs;
  readonly loadBalanceHosts: boolean;
}

interface HostOptions {
  readonly connectionString?: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | string | undefined;
  readonly hosts?: readonly { readonly host: string; readonly port?: number | undefined }[] | undefined;
  readonly targetSessionAttrs?: string | undefined;
  readonly loadBalanceHosts?: string | boolean | undefined;
}

/**
 * Finds every host to try, from `hosts: [{ host, port }]`, a multi-host URL
 * (`postgres://h1:5432,h2:5433/db?target_session_attrs=read-write`), a keyword/value string
 * (`host=h1,h2 port=5432,5433 dbname=db`), or `host: 'h1,h2'`. Each host gets its own client
 * options: pg reads one host per client, and a connection string overrides `host` and `port`.
 */
export function resolveHosts(options: HostOptions & Record<string, unknown>): HostSettings {
  let connectionString = options.connectionString;
  if (connectionString !== undefined && typeof connectionString !== 'string') throw new ConfigError('connectionString', 'a string', connectionString);
  if (connectionString !== undefined && !/^postgres(ql)?:\/\//i.test(connectionString) && connectionString.includes('=')) {
    connectionString = keywordsToUrl(connectionString);
  }
  const url = connectionString !== undefined && /^postgres(ql)?:\/\//i.test(connectionString) ? splitUrl(connectionString) : undefined;
  const params = url?.params ?? new URLSearchParams();
  const attrs = options.targetSessionAttrs ?? params.get('target_session_attrs') ?? 'any';
  if (typeof attrs !== 'string' || !ATTRS.has(attrs)) throw new ConfigError('targetSessionAttrs', `one of ${[...ATTRS].join(', ')}`, attrs);
  const balance = options.loadBalanceHosts ?? params.get('load_balance_hosts') ?? 'disable';
  if (balance !== true && balance !== false && balance !== 'random' && balance !== 'disable') {
    throw new ConfigError('loadBalanceHosts', "'random' or 'disable'", balance);
  }
  params.delete('target_session_attrs');
  params.delete('load_balance_hosts');

  const defaultPort = Number(options.port ?? process.env['PGPORT'] ?? 5432);
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
      const port = checkPort('hosts', entry.port ?? defaultPort);
      targets.push(target(entry.host, port, { ...base, connectionString: undefined, host: entry.host, port }));
    }
  } else if (url !== undefined && !url.hostList.includes(',') && url.params.toString() === new URLSearchParams(url.query).toString()) {
    // One host and nothing of ours in the string: pg reads it exactly as given.
    const [only] = parseHostList(url.hostList, defaultPort);
    targets.push(target(only?.host ?? 'localhost', only?.port ?? defaultPort, { ...base, connectionString }));
  } else if (url !== undefined) {
    for (const { host, port } of parseHostList(url.hostList, defaultPort)) {
      targets.push(target(host, port, { ...base, connectionString: url.rebuild(host, port) }));
    }
  } else {
    const hostList = typeof options.host === 'string' ? options.host : (process.env['PGHOST'] ?? 'localhost');
    const names = hostList.split(',');
    const ports = String(options.port ?? process.env['PGPORT'] ?? 5432).split(',');
    if (ports.length !== 1 && ports.length !== names.length) throw new ConfigError('port', `one port, or one per host (${names.length})`, options.port);
    names.forEach((name, i) => {
      const port = checkPort('port', Number(ports[ports.length === 1 ? 0 : i]));
      targets.push(target(name.trim(), port, names.length === 1 && options.host === undefined ? base : { ...base, host: name.trim(), port }));
    });
  }
  return { targets, targetSessionAttrs: attrs as TargetSessionAttrs, loadBalanceHosts: balance === true || balance === 'random' };
}

function checkPort(option: string, port: unknown): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(option, 'ports from 1 to 65535', port);
  return port;
}

interface SplitUrl {
  readonly hostList: string;
  /** The query string as written. */
  readonly query: string;
  readonly params: URLSearchParams;
  rebuild(host: string, port: number): string;
}

// postgres://[userinfo@]hostlist[/database][?params]: only the host list needs splitting by hand.
function splitUrl(connectionString: string): SplitUrl {
  const match = /^(postgres(?:ql)?:\/\/)(?:([^@/?#]*)@)?([^/?#]*)([^?#]*)(?:\?([^#]*))?/i.exec(connectionString);
  if (match === null) throw new ConfigError('connectionString', 'a postgres:// URL', '(unparseable)');
  const [, scheme, userinfo, hostList = '', path = '', query = ''] = match;
  const params = new URLSearchParams(query);
  return {
    hostList,
    query,
    params,
    rebuild: (host, port) => {
      const rest = params.toString();
      const name = host.includes(':') ? `[${host}]` : host;
      return `${scheme}${userinfo === undefined ? '' : `${userinfo}@`}${name}:${port}${path}${rest === '' ? '' : `?${rest}`}`;
    },
  };
}

function parseHostList(hostList: string, defaultPort: number): { host: string; port: number }[] {
  if (hostList === '') return [{ host: 'localhost', port: defaultPort }];
  return hostList.split(',').map((entry) => {
    const match = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d+))?$/.exec(entry.trim());
    const host = decodeURIComponent(match?.[1] ?? match?.[2] ?? '');
    if (match === null || host === '') throw new ConfigError('connectionString', 'hosts written as host or host:port, separated by commas', entry);
    return { host, port: checkPort('connectionString', match[3] === undefined ? defaultPort : Number(match[3])) };
  });
}

// libpq's keyword/value form, rewritten as the URL form pg understands, so every other keyword
// (sslmode, application_name, options...) keeps pg's own meaning.
function keywordsToUrl(text: string): string {
  const values = new Map<string, string>();
  const pattern = /\s*([a-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S*))/y;
  let position = 0;
  for (let match = pattern.exec(text); match !== null && match[0] !== ''; match = pattern.exec(text)) {
    values.set(match[1] as string, (match[2] ?? match[3] ?? '').replace(/\\(.)/g, '$1'));
    position = pattern.lastIndex;
  }
  if (text.slice(position).trim() !== '') throw new ConfigError('connectionString', "keyword=value pairs (quote values with spaces in '...')", text.slice(position));
  const take = (key: string): string | undefined => {
    const value = values.get(key);
    values.delete(key);
    return value;
  };
  const user = take('user');
  const password = take('password');
  const hosts = (take('host') ?? 'localhost').split(',');
  const ports = (take('port') ?? '').split(',');
  const database = take('dbname');
  const hostList = hosts.map((host, i) => {
    const port = ports.length === 1 ? ports[0] : ports[i];
    const name = host.includes(':') ? `[${host}]` : encodeURIComponent(host);
    return port === undefined || port === '' ? name : `${name}:${port}`;
  });
  const userinfo = user === undefined ? '' : `${encodeURIComponent(user)}${password === undefined ? '' : `:${encodeURIComponent(password)}`}@`;
  const query = new URLSearchParams([...values]).toString();
  return `postgres://${userinfo}${hostList.join(',')}${database === undefined ? '' : `/${encodeURIComponent(database)}`}${query === '' ? '' : `?${query}`}`;
}
