// Connection strings read as libpq reads them. The reference is libpq itself: a tiny C program
// (test/fixtures/conninfo-reference.c), compiled at run time, prints PQconninfoParse's reading of
// generated strings, and pg-lifeline's reading (and each host's client options) must equal it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { inspect } from 'node:util';
import pg from 'pg';
import { ConfigError, Pool, type PoolOptions } from '../src/index.js';
import { resolveConfig } from '../src/config.js';
import { conninfoHosts, readConninfo } from '../src/postgres/conninfo.js';
import { PgCluster } from './harness/cluster.js';

// The comparison is of what the strings say, not of what the environment adds.
for (const name of ['PGHOST', 'PGPORT', 'PGTARGETSESSIONATTRS', 'PGLOADBALANCEHOSTS']) delete process.env[name];

const INSTALL = 'conninfo.test.ts compares against libpq itself and needs a C compiler and libpq\'s headers: install them (Debian/Ubuntu: apt-get install gcc libpq-dev; .ci/run does this)';

let workDir: string;
let reference: string;
let libpqKeywords: Set<string>;

before(() => {
  const cc = spawnSync('cc', ['--version'], { encoding: 'utf8' });
  if (cc.error !== undefined || cc.status !== 0) throw new Error(`${INSTALL} (no \`cc\` found)`);
  const config = spawnSync('pg_config', ['--includedir'], { encoding: 'utf8' });
  const includeDir = config.status === 0 ? config.stdout.trim() : '/usr/include/postgresql';
  if (!existsSync(path.join(includeDir, 'libpq-fe.h'))) throw new Error(`${INSTALL} (no libpq-fe.h in ${includeDir})`);
  workDir = mkdtempSync(path.join(tmpdir(), 'conninfo-'));
  reference = path.join(workDir, 'conninfo-reference');
  const source = path.join(import.meta.dirname, 'fixtures', 'conninfo-reference.c');
  const built = spawnSync('cc', ['-O', '-o', reference, source, `-I${includeDir}`, '-lpq'], { encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`${INSTALL}: compiling ${source} failed:\n${built.stderr}`);
  libpqKeywords = new Set(JSON.parse(spawnSync(reference, ['keywords'], { encoding: 'utf8' }).stdout) as string[]);
});
after(() => workDir !== undefined && rmSync(workDir, { recursive: true, force: true }));

type Reading = { ok: Record<string, string> } | { error: string };

/** libpq's reading of each string, in order. */
function libpq(strings: readonly string[]): Reading[] {
  const input = strings.map((s) => Buffer.from(s, 'utf8').toString('hex')).join('\n') + '\n';
  const run = spawnSync(reference, [], { input, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout.trimEnd().split('\n');
  assert.equal(lines.length, strings.length);
  return lines.map((line) => JSON.parse(line) as Reading);
}

/** mulberry32: a small seeded PRNG, so a failure can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Valid values for the keywords libpq checks only when it connects, so a string can be valid throughout.
const CHECKED_VALUES: Record<string, readonly string[]> = {
  target_session_attrs: ['any', 'read-write', 'read-only', 'primary', 'standby', 'prefer-standby', 'prefer-primary'],
  load_balance_hosts: ['random', 'disable'],
};
const FREE_KEYWORDS = ['user', 'password', 'dbname', 'options', 'application_name', 'fallback_application_name', 'client_encoding', 'sslmode', 'connect_timeout', 'keepalives', 'sslcompression'];

function generator(seed: number, known: ReadonlySet<string>) {
  const checked = Object.entries(CHECKED_VALUES).filter(([keyword]) => known.has(keyword));
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
  const chance = (p: number): boolean => random() < p;
  const keywordPieces = ['a', 'b', 'Z', '0', '9', ' ', '  ', '\t', "'", '\\', '@', ':', '/', '?', '#', '&', '=', ',', '%', '+', '[', ']', 'é', '"', 'xyz', '-c x=1'];
  const urlPieces = ['a', 'B', '7', '@', ':', '/', '?', '#', '&', '=', ',', '+', '[', ']', '%40', '%2F', '%2f', '%3F', '%23', '%2C', '%20', '%3D', '%26', '%25', '%C3%A9', 'é', ' ', '~', '-', '.', '_'];
  const badUrlPieces = ['%', '%z1', '%4', '%00'];
  const text = (pieces: readonly string[], max: number): string => Array.from({ length: Math.floor(random() * (max + 1)) }, () => pick(pieces)).join('');
  const hostNames = ['localhost', '127.0.0.1', 'db.example.com', '/tmp/sock dir', '', 'h-1', '::1', 'fe80::1%eth0'];
  const port = (): string => (chance(0.15) ? '' : String(1 + Math.floor(random() * 65535)));
  const hostCount = (): number => (chance(0.6) ? 1 : 2 + Math.floor(random() * 3));

  // Keyword/value: every value quoted, backslash-escaped or bare, with spacing around '='; some broken.
  function quote(value: string): string {
    if (chance(0.5)) return `'${value.replace(/[\\']/g, (c) => (chance(0.9) ? `\\${c}` : c))}'`;
    return value.replace(/[\\'\s]/g, (c) => (chance(0.9) ? `\\${c}` : c)) + (chance(0.05) ? '\\' : '');
  }
  function keywordForm(): string {
    const pairs: string[] = [];
    const add = (keyword: string, value: string): void => {
      const eq = pick(['=', ' = ', '=', '\t=', '= ']);
      pairs.push(`${keyword}${eq}${quote(value)}`);
    };
    const count = hostCount();
    if (chance(0.8)) add('host', Array.from({ length: count }, () => pick(hostNames)).join(','));
    if (chance(0.7)) add('port', Array.from({ length: chance(0.5) ? 1 : count }, port).join(','));
    for (let i = Math.floor(random() * 5); i > 0; i--) add(pick(FREE_KEYWORDS), text(keywordPieces, 8));
    for (const [keyword, values] of checked) if (chance(0.2)) add(keyword, pick(values));
    if (chance(0.04)) pairs.push(pick(['bogus_kw=1', 'host', "dbname='open", '=x', 'host=a port']));
    const separator = (): string => pick([' ', '  ', '\t', '\n ', ' ']);
    return pairs.map((pair, i) => (i === 0 ? (chance(0.1) ? ' ' : '') : separator()) + pair).join('') + (chance(0.1) ? ' ' : '');
  }

  // URL: every part raw or percent-encoded, IPv6 hosts, host and port lists, query parameters; some broken.
  function urlPart(max: number): string {
    return text(chance(0.03) ? [...urlPieces, ...badUrlPieces] : urlPieces, max);
  }
  function urlHost(): string {
    const name = pick(hostNames);
    if (name.includes(':') && chance(0.9)) return `[${name}]${chance(0.03) ? 'x' : ''}`;
    return chance(0.5) ? encodeURIComponent(name) : chance(0.5) ? name.replace(/[/:,?@]/g, '') : urlPart(4).replace(/[:/?,@[]/g, '');
  }
  function urlForm(): string {
    let url = pick(['postgres://', 'postgresql://']);
    if (chance(0.6)) url += `${urlPart(5).replace(/[:@/]/g, '')}${chance(0.7) ? `:${urlPart(6).replace(/[@/]/g, '')}` : ''}@`;
    const hosts = Array.from({ length: hostCount() }, () => {
      const host = urlHost();
      return chance(0.6) ? `${host}:${port()}` : host;
    });
    url += hosts.join(',');
    if (chance(0.02)) url += pick(['[', '[]', '[::1']);
    if (chance(0.7)) url += `/${urlPart(6).replace(/\?/g, '')}`;
    if (chance(0.6)) {
      const params: string[] = [];
      for (let i = 1 + Math.floor(random() * 3); i > 0; i--) {
        const keyword = chance(0.7) ? pick(FREE_KEYWORDS) : pick([...checked.map(([keyword]) => keyword), 'host', 'port', 'ssl']);
        const value = keyword in CHECKED_VALUES ? pick(CHECKED_VALUES[keyword] as string[]) : keyword === 'port' ? port() : keyword === 'ssl' ? 'true' : urlPart(6).replace(/&/g, '');
        params.push(`${keyword}=${value}`);
      }
      if (chance(0.04)) params.push(pick(['bogus_kw=1', 'x', 'a=b=c', '']));
      url += `?${params.join('&')}`;
    }
    return url;
  }
  return { next: (): string => (chance(0.5) ? keywordForm() : urlForm()) };
}

/** Whether libpq would go on to connect with this reading: the checks it makes only when connecting. */
function connectable(reading: Record<string, string>): boolean {
  const hosts = (reading['host'] ?? '').split(',');
  const ports = reading['port'] === undefined || reading['port'] === '' ? [] : reading['port'].split(',');
  if (ports.length > 1 && ports.length !== hosts.length) return false;
  if (!ports.every((p) => p === '' || (/^\s*\d+\s*$/.test(p) && Number(p) >= 1 && Number(p) <= 65535))) return false;
  return Object.entries(CHECKED_VALUES).every(([keyword, values]) => reading[keyword] === undefined || values.includes(reading[keyword] as string));
}

function readOrError(text: string): Map<string, string> | Error {
  try {
    return new Map(readConninfo(text));
  } catch (error) {
    return error as Error;
  }
}

describe('connection strings against libpq', () => {
  test('thousands of generated strings read exactly as libpq reads them, per host too', () => {
    // Only the keywords the installed libpq knows (an older one lacks some of pg-lifeline's).
    const strings: string[] = [];
    const make = generator(20_261_203, libpqKeywords);
    for (let i = 0; i < 4000; i++) strings.push(make.next());
    const readings = libpq(strings);
    let accepted = 0;
    let rejected = 0;
    let multiHost = 0;
    strings.forEach((text, i) => {
      const expected = readings[i] as Reading;
      const ours = readOrError(text);
      const context = `string #${i}: ${JSON.stringify(text)}`;
      if ('error' in expected) {
        rejected++;
        assert.ok(ours instanceof ConfigError, `libpq rejects ${context} (${expected.error.trim()}); pg-lifeline read ${String(ours instanceof Map ? JSON.stringify([...ours]) : ours)}`);
        assert.equal(ours.option, 'connectionString');
        return;
      }
      assert.ok(ours instanceof Map, `libpq reads ${context}; pg-lifeline threw ${String(ours)}`);
      assert.deepEqual(Object.fromEntries(ours), expected.ok, context);
      accepted++;
      // As in pg, an empty connectionString is no connection string at all.
      if (text === '') return;
      if (!connectable(expected.ok)) {
        assert.throws(() => resolveConfig({ connectionString: text }), ConfigError, context);
        return;
      }
      const config = resolveConfig({ connectionString: text });
      const hosts = (expected.ok['host'] ?? '').split(',');
      const ports = expected.ok['port'] === undefined || expected.ok['port'] === '' ? [] : expected.ok['port'].split(',');
      if (hosts.length > 1) multiHost++;
      assert.equal(config.hosts.targets.length, hosts.length, context);
      assert.equal(config.password, expected.ok['password'], context);
      config.hosts.targets.forEach((target, h) => {
        const host = hosts[h] as string;
        const port = (ports.length === 1 ? ports[0] : ports[h]) ?? '';
        if (host !== '') assert.equal(target.clientOptions['host'], host, context);
        assert.equal(target.port, port === '' ? 5432 : Number(port), context);
        assert.equal(target.clientOptions['port'], target.port, context);
        assert.equal(target.clientOptions['password'], undefined, 'the password reaches clients from the connection, not these options');
        assert.equal(target.clientOptions['connectionString'], undefined, context);
        const named: [string, string][] = [['user', 'user'], ['database', 'dbname'], ['options', 'options'], ['application_name', 'application_name'], ['fallback_application_name', 'fallback_application_name'], ['client_encoding', 'client_encoding']];
        for (const [option, keyword] of named) assert.equal(target.clientOptions[option], expected.ok[keyword], `${option} of ${context}`);
      });
      if (expected.ok['target_session_attrs'] !== undefined) assert.equal(config.hosts.targetSessionAttrs, expected.ok['target_session_attrs'], context);
      assert.equal(config.hosts.loadBalanceHosts, expected.ok['load_balance_hosts'] === 'random', context);
    });
    // The generator must reach every kind of string, or the comparison proves little.
    assert.ok(accepted > 1500 && rejected > 200 && multiHost > 300, `accepted ${accepted}, rejected ${rejected}, multi-host ${multiHost}`);
  });

  test('the reported strings read as libpq reads them', () => {
    const cases = [
      'host=a password=secret',
      "dbname='p@ss:w/rd' host=h",
      'postgres://u@h/q%3Fr%23s',
      'postgres://user@%2Ftmp%2Fdir:5432/db?target_session_attrs=read-write',
      'postgres://[::1]:5432,[fe80::2]:5433/db',
      "host = 'a b' user=\\'x dbname= port=1",
    ];
    const readings = libpq(cases);
    cases.forEach((text, i) => assert.deepEqual(Object.fromEntries(readConninfo(text)), (readings[i] as { ok: Record<string, string> }).ok, text));
    assert.equal(resolveConfig({ connectionString: 'host=a password=secret' }).password, 'secret');
    const socket = resolveConfig({ connectionString: 'postgres://user@%2Ftmp%2Fdir:5432/db?target_session_attrs=read-write' }).hosts.targets[0];
    assert.equal(socket?.clientOptions['host'], '/tmp/dir');
  });

  test('what libpq checks only when it connects is refused up front, without echoing the password', () => {
    const refused = [
      ['host=a,b,c port=1,2 password=hunter2', 'ports'],
      ['postgres://u:hunter2@a:99999/db', 'ports from 1 to 65535'],
      ['host=a port=x password=hunter2', 'ports from 1 to 65535'],
      ["host=a password=hunter2 dbname='open", 'never closed'],
      ['postgres://u:hunter2@h/db?bogus=1', 'unknown query parameter'],
      ['host=a hunter2', "no '='"],
    ] as const;
    for (const [text, mention] of refused) {
      const error = (() => {
        try {
          resolveConfig({ connectionString: text });
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      assert.ok(error instanceof ConfigError, text);
      assert.equal(error.option, 'connectionString');
      assert.ok(error.message.includes(mention), `${error.message} should mention ${mention}`);
      assert.ok(!error.message.includes('hunter2'), error.message);
    }
    assert.deepEqual(conninfoHosts(readConninfo('host=a,b port=1')), [
      { host: 'a', hostaddr: '', port: '1' },
      { host: 'b', hostaddr: '', port: '1' },
    ]);
  });
});

describe('the tricky forms on a real server', () => {
  const database = 'p@ss:w/rd';
  const role = 'tricky';
  const password = `p@ss w:'r"d\\/?#%&=+,`;
  let cluster: PgCluster;
  before(async () => {
    cluster = await PgCluster.start();
    await cluster.query(`CREATE DATABASE "${database}"`);
    await cluster.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
  });
  after(() => cluster?.destroy());

  /** A keyword/value value, quoted as libpq reads it. */
  const q = (value: string): string => `'${value.replace(/[\\']/g, '\\$&')}'`;
  const tls = (): string => `sslmode=verify-full sslrootcert=${q(cluster.caFile ?? '')}`;
  const tlsQuery = (): string => `sslmode=verify-full&sslrootcert=${encodeURIComponent(cluster.caFile ?? '')}`;

  async function whoAndWhere(make: () => pg.Pool): Promise<{ user: string; database: string; socket: boolean }> {
    const pool = make();
    try {
      const row = (await pool.query('SELECT current_user AS user, current_database() AS database, inet_server_addr() IS NULL AS socket')).rows[0];
      return { user: row.user, database: row.database, socket: row.socket };
    } finally {
      await pool.end();
    }
  }

  test('pg-lifeline connects with each form as libpq reads it', async () => {
    const forms: [string, PoolOptions, { user: string; database: string; socket: boolean }][] = [
      // No user= in the string: the password is kept, the user comes from the options.
      ['keyword form without user', { user: 'postgres', connectionString: `host=127.0.0.1 port=${cluster.port} password=${q(cluster.password)} dbname=${q(database)} ${tls()}` }, { user: 'postgres', database, socket: false }],
      ['keyword form, special characters', { connectionString: `host=127.0.0.1,127.0.0.1 port=${cluster.port},${cluster.port} user=${role} password=${q(password)} dbname=${q(database)} ${tls()}` }, { user: role, database, socket: false }],
      ['URL, percent-encoded', { connectionString: `postgres://${role}:${encodeURIComponent(password)}@127.0.0.1:${cluster.port}/${encodeURIComponent(database)}?${tlsQuery()}` }, { user: role, database, socket: false }],
      ['URL, socket directory with target_session_attrs', { connectionString: `postgres://postgres@${encodeURIComponent(cluster.dataDir)}:${cluster.port}/postgres?target_session_attrs=read-write&load_balance_hosts=random` }, { user: 'postgres', database: 'postgres', socket: true }],
      ['socket: form, as pg reads it', { connectionString: `socket:${cluster.dataDir}?db=${encodeURIComponent(database)}&port=${cluster.port}&user=postgres` }, { user: 'postgres', database, socket: true }],
    ];
    for (const [name, options, expected] of forms) {
      assert.deepEqual(await whoAndWhere(() => new Pool(options)), expected, name);
    }
  });

  test('where pg reads a string the same, pg.Pool and pg-lifeline reach the same place', async () => {
    const url = `postgres://${role}:${encodeURIComponent(password)}@127.0.0.1:${cluster.port}/postgres?${tlsQuery()}`;
    for (const make of [() => new pg.Pool({ connectionString: url }), () => new Pool({ connectionString: url })]) {
      assert.deepEqual(await whoAndWhere(make), { user: role, database: 'postgres', socket: false });
    }
  });

  test('the password never shows when the pool or its options are printed, and new Pool(pool.options) keeps it', async () => {
    const url = `postgres://${role}:${encodeURIComponent(password)}@127.0.0.1:${cluster.port}/postgres?${tlsQuery()}`;
    const secret = encodeURIComponent(password);
    for (const options of [{ connectionString: url }, { ...cluster.clientConfig(), user: role, password }] as PoolOptions[]) {
      const pool = new Pool(options);
      try {
        for (const shown of [inspect(pool, { depth: 6 }), inspect(pool.options), JSON.stringify(pool.options), JSON.stringify({ pool: pool.options })]) {
          assert.ok(!shown.includes(secret) && !shown.includes(password), shown);
        }
        if (options.connectionString !== undefined) {
          assert.equal(pool.options.connectionString, url, 'read directly, it is the real string');
          assert.ok(JSON.stringify(pool.options).includes(`${role}:*****@`));
        }
        assert.deepEqual(await whoAndWhere(() => new Pool(pool.options)), { user: role, database: 'postgres', socket: false });
        // A spread drops a hidden `password` option, as with pg.Pool, but not the string.
        if (options.connectionString !== undefined) assert.deepEqual(await whoAndWhere(() => new Pool({ ...pool.options })), { user: role, database: 'postgres', socket: false });
      } finally {
        await pool.end();
      }
    }
  });
});
