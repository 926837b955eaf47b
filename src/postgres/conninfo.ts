import { ConfigError } from '../errors.js';

// libpq's connection string reader (PQconninfoParse in fe-connect.c), so every value reaches a
// connection as libpq would read it: keyword/value strings with their quoting and backslash escapes,
// and postgres:// URLs with libpq's percent-decoding, host lists and query parameters.

/** libpq's keywords (PostgreSQL 17), each read from either form. */
const LIBPQ_KEYWORDS: ReadonlySet<string> = new Set([
  'service', 'user', 'password', 'passfile', 'channel_binding', 'connect_timeout', 'dbname', 'host', 'hostaddr', 'port',
  'client_encoding', 'options', 'application_name', 'fallback_application_name', 'keepalives', 'keepalives_idle',
  'keepalives_interval', 'keepalives_count', 'tcp_user_timeout', 'sslmode', 'sslnegotiation', 'sslcompression', 'sslcert',
  'sslkey', 'sslcertmode', 'sslpassword', 'sslrootcert', 'sslcrl', 'sslcrldir', 'sslsni', 'requirepeer', 'require_auth',
  'ssl_min_protocol_version', 'ssl_max_protocol_version', 'gssencmode', 'krbsrvname', 'gsslib', 'gssdelegation', 'replication',
  'target_session_attrs', 'load_balance_hosts',
]);

/**
 * Keywords pg reads from a connection string that libpq does not know: accepted so strings written
 * for pg keep working (`?ssl=no-verify`, `?uselibpqcompat=true`, `?statement_timeout=5000`).
 */
const PG_ONLY_KEYWORDS: ReadonlySet<string> = new Set(['ssl', 'uselibpqcompat', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout']);

/** What a connection string says: libpq keyword → value, only those it sets (PQconninfoParse's non-null values). */
export type Conninfo = ReadonlyMap<string, string>;

/** True for the URL prefixes libpq reads (`postgresql://`, `postgres://`), in any case as pg accepts them. */
export function isLibpqUrl(text: string): boolean {
  return /^postgres(ql)?:\/\//i.test(text);
}

/**
 * True for forms only pg reads: another URL scheme (`socket:/dir?db=x`, `pg://`) or pg's
 * `/socket/dir database` shorthand. These are read by pg's own parser, as pg.Pool does.
 */
export function isPgOnlyForm(text: string): boolean {
  return !isLibpqUrl(text) && (text.startsWith('/') || /^[a-z][a-z0-9+.-]*:/i.test(text));
}

/**
 * Reads `text` as libpq does: a `postgres://` URL, or else keyword/value pairs. Throws ConfigError
 * (option `connectionString`) where libpq would refuse the string; the message never repeats the
 * string's contents, which may hold a password.
 */
export function readConninfo(text: string): Conninfo {
  const values = new Map<string, string>();
  if (isLibpqUrl(text)) readUrl(text, values);
  else readKeywords(text, values);
  return values;
}

function fail(problem: string): never {
  throw new ConfigError('connectionString', 'a connection string libpq can read (keyword=value pairs or a postgres:// URL)', problem);
}

// libpq names a bad keyword; a name that does not look like one may be a mistyped password.
function nameOf(keyword: string): string {
  return /^[a-z_]{1,40}$/i.test(keyword) ? `'${keyword}'` : 'a keyword';
}

function store(values: Map<string, string>, keyword: string, value: string, problem: string): void {
  if (keyword === 'requiressl') {
    values.set('sslmode', value.startsWith('1') ? 'require' : 'prefer');
    return;
  }
  if (!LIBPQ_KEYWORDS.has(keyword) && !PG_ONLY_KEYWORDS.has(keyword)) fail(problem);
  values.set(keyword, value);
}

// C's isspace: space, \t, \n, \v, \f, \r.
function isSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';
}

/** Where a value was written (start and end index of its text, quotes included). */
interface Span {
  readonly keyword: string;
  readonly start: number;
  readonly end: number;
}

function readKeywords(text: string, values: Map<string, string>, spans?: Span[]): void {
  let i = 0;
  while (i < text.length) {
    if (isSpace(text[i])) {
      i++;
      continue;
    }
    const start = i;
    while (i < text.length && text[i] !== '=' && !isSpace(text[i])) i++;
    const keyword = text.slice(start, i);
    while (isSpace(text[i])) i++;
    if (text[i] !== '=') fail(`no '=' after ${nameOf(keyword)} at character ${start + 1}`);
    i++;
    while (isSpace(text[i])) i++;
    let value = '';
    const valueStart = i;
    if (text[i] === "'") {
      i++;
      for (;;) {
        if (i >= text.length) fail(`a quoted value of ${nameOf(keyword)} that is never closed`);
        const c = text[i] as string;
        if (c === '\\') {
          i++;
          if (i < text.length) value += text[i++];
        } else if (c === "'") {
          i++;
          break;
        } else {
          value += c;
          i++;
        }
      }
    } else {
      while (i < text.length) {
        const c = text[i] as string;
        if (isSpace(c)) break;
        if (c === '\\') {
          i++;
          if (i < text.length) value += text[i++];
        } else {
          value += c;
          i++;
        }
      }
    }
    spans?.push({ keyword, start: valueStart, end: i });
    store(values, keyword, value, `an unknown keyword ${nameOf(keyword)}`);
  }
}

/** libpq's percent-decoding: `%XX` only (no `+` for space), and `%00` refused. */
function decode(text: string, what: string): string {
  if (!text.includes('%')) return text;
  const bytes: number[] = [];
  const raw = Buffer.from(text, 'utf8');
  for (let i = 0; i < raw.length; i++) {
    const byte = raw[i] as number;
    if (byte !== 0x25) {
      bytes.push(byte);
      continue;
    }
    const hex = raw.subarray(i + 1, i + 3).toString('latin1');
    if (!/^[0-9a-f]{2}$/i.test(hex)) fail(`a bad percent-encoding in the ${what}`);
    const code = parseInt(hex, 16);
    if (code === 0) fail(`%00 in the ${what}`);
    bytes.push(code);
    i += 2;
  }
  return Buffer.from(bytes).toString('utf8');
}

function readUrl(text: string, values: Map<string, string>): void {
  let p = text.indexOf('://') + 3;
  const at = firstOf(text, '@/', p);
  if (text[at] === '@') {
    const userEnd = firstOf(text, ':@', p);
    const user = text.slice(p, userEnd);
    if (user !== '') values.set('user', decode(user, 'user name'));
    if (text[userEnd] === ':') {
      const password = text.slice(userEnd + 1, at);
      if (password !== '') values.set('password', decode(password, 'password'));
    }
    p = at + 1;
  }
  const hosts: string[] = [];
  const ports: string[] = [];
  let end: string | undefined;
  for (;;) {
    let host: string;
    if (text[p] === '[') {
      const close = text.indexOf(']', p + 1);
      if (close < 0) fail('an IPv6 address with no closing bracket');
      if (close === p + 1) fail('an empty IPv6 address []');
      host = text.slice(p + 1, close);
      p = close + 1;
      if (p < text.length && !':/?,'.includes(text[p] as string)) fail(`an unexpected character after an IPv6 address at character ${p + 1}`);
    } else {
      const stop = firstOf(text, ':/?,', p);
      host = text.slice(p, stop);
      p = stop;
    }
    hosts.push(host);
    end = text[p];
    let port = '';
    if (end === ':') {
      const stop = firstOf(text, '/?,', p + 1);
      port = text.slice(p + 1, stop);
      p = stop;
      end = text[p];
    }
    ports.push(port);
    if (end !== ',') break;
    p++;
  }
  const hostList = hosts.join(',');
  const portList = ports.join(',');
  if (hostList !== '') values.set('host', decode(hostList, 'host'));
  if (portList !== '') values.set('port', decode(portList, 'port'));
  if (end === '/') {
    const stop = firstOf(text, '?', p + 1);
    const dbname = text.slice(p + 1, stop);
    if (dbname !== '') values.set('dbname', decode(dbname, 'database name'));
    p = stop;
    end = text[p];
  }
  if (end === '?') readParams(text.slice(p + 1), values);
}

/** Index of the first of `chars` in `text` from `from`, or the length. */
function firstOf(text: string, chars: string, from: number): number {
  let i = from;
  while (i < text.length && !chars.includes(text[i] as string)) i++;
  return i;
}

function readParams(query: string, values: Map<string, string>): void {
  let p = 0;
  while (p < query.length) {
    const stop = firstOf(query, '&', p);
    const pair = query.slice(p, stop);
    p = stop < query.length ? stop + 1 : stop;
    const eq = pair.indexOf('=');
    if (eq < 0) fail('a query parameter with no equals sign');
    if (pair.indexOf('=', eq + 1) >= 0) fail('a query parameter with two equals signs');
    let keyword = decode(pair.slice(0, eq), 'query parameter name');
    let value = decode(pair.slice(eq + 1), 'query parameter value');
    // libpq's JDBC compatibility.
    if (keyword === 'ssl' && value === 'true') [keyword, value] = ['sslmode', 'require'];
    store(values, keyword, value, `an unknown query parameter ${nameOf(keyword)}`);
  }
}

/** One server of a host list, as libpq pairs hosts with ports; empty where the string leaves it to the default. */
export interface ConninfoHost {
  readonly host: string;
  readonly hostaddr: string;
  readonly port: string;
}

/**
 * Pairs the host list with the port list as libpq does when it connects: one port for all hosts,
 * or one per host (else ConfigError). `hostaddr` counts the hosts when it is given.
 */
export function conninfoHosts(info: Conninfo): ConninfoHost[] {
  const hostaddrs = (info.get('hostaddr') ?? '') === '' ? [] : (info.get('hostaddr') as string).split(',');
  const names = (info.get('host') ?? '') === '' ? [] : (info.get('host') as string).split(',');
  const count = Math.max(1, hostaddrs.length > 0 ? hostaddrs.length : names.length);
  if (hostaddrs.length > 0 && names.length > 0 && names.length !== hostaddrs.length) fail(`${names.length} host names for ${hostaddrs.length} host addresses`);
  const ports = (info.get('port') ?? '') === '' ? [] : (info.get('port') as string).split(',');
  if (ports.length > 1 && ports.length !== count) fail(`${ports.length} ports for ${count} hosts`);
  return Array.from({ length: count }, (_, i) => ({
    host: names[i] ?? '',
    hostaddr: hostaddrs[i] ?? '',
    port: (ports.length === 1 ? ports[0] : ports[i]) ?? '',
  }));
}

const MASK = '*****';

/**
 * `text` with its password replaced by `*****`, for anything pg-lifeline prints. A string that
 * cannot be read is not shown at all.
 */
export function maskConnectionString(text: string): string {
  if (isLibpqUrl(text) || isPgOnlyForm(text)) {
    // The userinfo ends at the first "@" before any "/" (libpq); its password after the first ":".
    const start = text.indexOf('://') < 0 ? 0 : text.indexOf('://') + 3;
    let masked = text;
    const at = firstOf(text, '@/', start);
    if (text[at] === '@') {
      const colon = firstOf(text, ':@', start);
      if (colon < at) masked = `${text.slice(0, colon + 1)}${MASK}${text.slice(at)}`;
    }
    return masked.replace(/([?&]password=)[^&]*/gi, `$1${MASK}`);
  }
  const spans: Span[] = [];
  try {
    readKeywords(text, new Map(), spans);
  } catch {
    return '(a connection string that could not be read)';
  }
  let masked = text;
  // From the end, so earlier spans keep their positions.
  for (const span of spans.reverse()) {
    if (span.keyword === 'password') masked = `${masked.slice(0, span.start)}${MASK}${masked.slice(span.end)}`;
  }
  return masked;
}
