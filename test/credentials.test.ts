// The password option as a provider function: caching, single flight, refresh on auth failure.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { inspect } from 'node:util';
import { after, before, test } from 'node:test';
import { ConfigError, ConnectFailedError, CredentialProviderError, Pool, type CredentialTarget, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';

const clusters: PgCluster[] = [];
let counter = 0;

// A role that must log in with SCRAM over TCP, whatever the template's trust lines say.
async function scramCluster(password: string): Promise<PgCluster> {
  const cluster = await PgCluster.start();
  clusters.push(cluster);
  const hba = path.join(cluster.dataDir, 'pg_hba.conf');
  await writeFile(hba, `host all app 127.0.0.1/32 scram-sha-256\n${await readFile(hba, 'utf8')}`);
  await cluster.query("SET password_encryption = 'scram-sha-256'");
  await cluster.query(`CREATE ROLE app LOGIN PASSWORD '${password}'`);
  await cluster.query('SELECT pg_reload_conf()');
  return cluster;
}

after(async () => {
  for (const cluster of clusters) await cluster.destroy();
});

let main: PgCluster;
before(async () => {
  main = await scramCluster('first-secret');
});

function pool(cluster: PgCluster, password: PoolOptions['password'], extra: PoolOptions = {}): Pool {
  return new Pool({ ...cluster.clientConfig(), user: 'app', application_name: `cred-${++counter}`, password, ...extra });
}

test('a rotated password: sessions live on, a restart logs in again with one provider refresh', async () => {
  let secret = 'first-secret';
  const calls: CredentialTarget[] = [];
  const p = pool(main, (target) => (calls.push(target), secret), { max: 4 });
  try {
    await Promise.all([1, 2, 3, 4].map(() => p.query('SELECT pg_sleep(0.05)')));
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0], { host: main.clientConfig().host, port: main.clientConfig().port, user: 'app', database: main.clientConfig().database });
    await main.query("ALTER ROLE app PASSWORD 'second-secret'");
    secret = 'second-secret';
    // Open sessions keep working on the old login.
    assert.equal((await p.query("SELECT 1 AS one")).rows[0]?.one, 1);
    await main.restart('fast');
    const rows = await Promise.all([1, 2, 3, 4].map(() => p.query('SELECT 1 AS one')));
    assert.equal(rows.length, 4);
    assert.equal(calls.length, 2);
  } finally {
    await p.end();
    await main.query("ALTER ROLE app PASSWORD 'first-secret'");
  }
});

test('a wrong token gets exactly one forced refresh, then a permanent ConnectFailedError', async () => {
  let calls = 0;
  const p = pool(main, () => (calls++, { password: 'wrong-token-value', expiresAt: Date.now() + 900_000 }), { retry: false });
  try {
    const error = await p.query('SELECT 1').then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof ConnectFailedError, String(error));
    assert.equal(error.sqlState, '28P01');
    assert.equal(calls, 2);
    assert.ok(!inspect(error, { depth: 5 }).includes('wrong-token-value'));
  } finally {
    await p.end();
  }
});

test('50 concurrent connects after a restart make one provider call per host', async () => {
  let calls = 0;
  let secret = 'first-secret';
  const p = pool(main, async () => {
    calls++;
    await new Promise((resolve) => setImmediate(resolve));
    return secret;
  }, { max: 50 });
  try {
    await Promise.all(Array.from({ length: 50 }, () => p.query('SELECT pg_sleep(0.1)')));
    assert.equal(calls, 1);
    // Rotated while down: all 50 reconnects are refused with the cached password, and refresh it once.
    await main.query("ALTER ROLE app PASSWORD 'rotated-secret'");
    secret = 'rotated-secret';
    await main.restart('fast');
    await Promise.all(Array.from({ length: 50 }, () => p.query('SELECT pg_sleep(0.05)')));
    assert.equal(p.totalCount > 40, true);
    assert.equal(calls, 2);
  } finally {
    await p.end();
    await main.query("ALTER ROLE app PASSWORD 'first-secret'");
  }
});

test('an expiring token is fetched again once it is due; a hung provider fails with CredentialProviderError', async () => {
  let calls = 0;
  const expiring = pool(main, () => (calls++, { password: 'first-secret', expiresAt: new Date(Date.now() - 1) }), { max: 1, maxLifetimeSeconds: 0 });
  try {
    await expiring.query('SELECT 1');
    await expiring.query('SELECT 1');
    assert.equal(calls, 1, 'an open session does not ask again');
    await main.terminateBackends(expiring.options.application_name);
    await expiring.query('SELECT 1');
    assert.equal(calls, 2);
  } finally {
    await expiring.end();
  }
  const hung = pool(main, function signToken() {
    return new Promise<string>(() => undefined);
  }, { connectionTimeoutMillis: 2000, retry: false });
  try {
    const error = await hung.query('SELECT 1').then(() => undefined, (e: unknown) => e);
    assert.ok(error instanceof CredentialProviderError, String(error));
    assert.equal(error.provider, 'signToken');
  } finally {
    await hung.end();
  }
});

test('multi-host: each host gets its own token; no secret in events, logs, stats or inspect', async () => {
  const second = await scramCluster('second-host-secret');
  const a = main.clientConfig();
  const b = second.clientConfig();
  const seen: string[] = [];
  const lines: string[] = [];
  const log = (...args: unknown[]) => lines.push(inspect(args, { depth: 6 }));
  const p = new Pool({
    hosts: [{ host: a.host, port: a.port }, { host: b.host, port: b.port }],
    user: 'app',
    database: a.database,
    loadBalanceHosts: 'random',
    max: 8,
    logger: { debug: log, info: log, warn: log, error: log },
    password: (t) => (seen.push(`${t.port}`), t.port === a.port ? 'first-secret' : 'second-host-secret'),
  });
  const events: string[] = [];
  for (const name of ['connect', 'evict', 'connectFailed', 'outage', 'recovered']) p.on(name as 'connect', (e: unknown) => events.push(inspect(e, { depth: 4 })));
  try {
    const ports = new Set<number>();
    for (let i = 0; i < 40 && ports.size < 2; i++) {
      const clients = await Promise.all([1, 2, 3, 4].map(() => p.connect()));
      for (const c of clients) {
        ports.add(Number((await c.query('SELECT inet_server_port() AS port')).rows[0].port));
        // Destroyed, so each round opens new connections and picks hosts afresh (idle ones would be reused).
        c.release(true);
      }
    }
    assert.deepEqual([...ports].sort(), [a.port, b.port].sort());
    assert.deepEqual([...new Set(seen)].sort(), [`${a.port}`, `${b.port}`].sort());
    const everything = [inspect(p, { depth: 6 }), inspect(p.stats(), { depth: 6 }), JSON.stringify(p.stats()), ...events, ...lines].join('\n');
    assert.ok(!everything.includes('first-secret') && !everything.includes('second-host-secret'));
  } finally {
    await p.end();
  }
});

test('a password that is neither a string nor a function is a ConfigError naming the option', () => {
  assert.throws(() => new Pool({ password: 42 as unknown as string }), (e: unknown) => e instanceof ConfigError && e.option === 'password' && !e.message.includes('42'));
});
