import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

/** A client plus what happened to it, recorded from the start so no event is missed. */
interface Tracked {
  client: pg.Client;
  errors: Error[];
  ended: boolean;
}

const opened = new Set<pg.Client>();

function track(config: pg.ClientConfig): Tracked {
  const client = new pg.Client({ connectionTimeoutMillis: 5_000, ...config });
  const tracked: Tracked = { client, errors: [], ended: false };
  client.on('error', (error) => tracked.errors.push(error));
  client.on('end', () => (tracked.ended = true));
  opened.add(client);
  return tracked;
}

async function connect(config: pg.ClientConfig): Promise<Tracked> {
  const tracked = track(config);
  await tracked.client.connect();
  return tracked;
}

async function closeClients(): Promise<void> {
  await Promise.all([...opened].map((client) => client.end().catch(() => {})));
  opened.clear();
}

async function backendPid(client: pg.Client): Promise<number> {
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  return rows[0]?.pid ?? -1;
}

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('PgCluster', () => {
  let cluster: PgCluster;

  before(async () => {
    cluster = await PgCluster.start({ settings: { max_connections: 20 } });
  });

  after(async () => {
    await closeClients();
    await cluster?.destroy();
  });

  test('starts a private server with the requested settings', async () => {
    const [row] = await cluster.query<{ max: string; fsync: string }>(
      "SELECT current_setting('max_connections') AS max, current_setting($1) AS fsync",
      ['fsync'],
    );
    assert.deepEqual(row, { max: '20', fsync: 'off' });
    const viaUrl = await connect({ connectionString: cluster.connectionString() });
    const { rows } = await viaUrl.client.query('SELECT current_user AS who, current_database() AS db');
    assert.deepEqual(rows, [{ who: 'postgres', db: 'postgres' }]);
    await viaUrl.client.end();
  });

  test('terminateBackends kills matching backends and waits until they are gone', async () => {
    const victim = await connect({ ...cluster.clientConfig(), application_name: 'victim' });
    const bystander = await connect({ ...cluster.clientConfig(), application_name: 'bystander' });
    assert.deepEqual(await cluster.backendPids('victim'), [await backendPid(victim.client)]);

    assert.equal(await cluster.terminateBackends('victim'), 1);
    assert.deepEqual(await cluster.backendPids('victim'), []);
    const error = await waitFor('the victim client to see an error', () => victim.errors[0]);
    assert.equal((error as pg.DatabaseError).code, '57P01'); // admin_shutdown
    assert.equal((await bystander.client.query('SELECT 1 AS ok')).rows[0].ok, 1);
    await bystander.client.end();
  });

  test("restart('fast') keeps the port and accepts new connections", async () => {
    const old = await connect(cluster.clientConfig());
    const port = cluster.port;
    await cluster.restart('fast');
    assert.equal(cluster.port, port);
    await waitFor('the old client to notice the restart', () => old.errors.length > 0 || old.ended);
    assert.deepEqual(await cluster.query('SELECT 1 AS one'), [{ one: 1 }]);
  });

  test('crash() then startAgain() brings the server back on the same port', async () => {
    const port = cluster.port;
    await cluster.crash();
    assert.equal(cluster.isRunning(), false);
    await assert.rejects(cluster.query('SELECT 1'), { code: 'ECONNREFUSED' });
    await cluster.startAgain();
    assert.equal(cluster.isRunning(), true);
    assert.equal(cluster.port, port);
    assert.deepEqual(await cluster.query('SELECT 1 AS one'), [{ one: 1 }]);
  });

  test('setSetting applies to new connections and resetSetting undoes it', async () => {
    await cluster.setSetting('idle_session_timeout', '500ms');
    const idle = await connect(cluster.clientConfig());
    const error = await waitFor('the idle session to be killed', () => idle.errors[0]);
    assert.equal((error as pg.DatabaseError).code, '57P05'); // idle_session_timeout

    await cluster.resetSetting('idle_session_timeout');
    assert.deepEqual(await cluster.query('SHOW idle_session_timeout'), [{ idle_session_timeout: '0' }]);
  });

  test('ssl option serves TLS', { skip: !hasOpenssl() && 'openssl is not installed' }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-cert-'));
    const certFile = path.join(dir, 'server.crt');
    const keyFile = path.join(dir, 'server.key');
    let tls: PgCluster | undefined;
    try {
      await promisify(execFile)('openssl', [
        'req', '-x509', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
        '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-keyout', keyFile, '-out', certFile,
      ]);
      tls = await PgCluster.start({ ssl: { certFile, keyFile } });
      const secure = await connect({ ...tls.clientConfig(), ssl: { rejectUnauthorized: false } });
      const { rows } = await secure.client.query('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
      assert.deepEqual(rows, [{ ssl: true }]);
      await secure.client.end();
    } finally {
      await tls?.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('FaultProxy', () => {
  let cluster: PgCluster;
  let proxy: FaultProxy;
  const viaProxy = (extra: pg.ClientConfig = {}): pg.ClientConfig => ({
    ...cluster.clientConfig(),
    host: proxy.host,
    port: proxy.port,
    ...extra,
  });

  before(async () => {
    cluster = await PgCluster.start();
    proxy = await FaultProxy.start(cluster);
  });

  after(async () => {
    await closeClients();
    await proxy?.close();
    await proxy?.close(); // idempotent
    await cluster?.destroy();
  });

  test('passes traffic through and tracks live connections', async () => {
    const c = await connect(viaProxy());
    assert.deepEqual((await c.client.query('SELECT 40 + 2 AS answer')).rows, [{ answer: 42 }]);
    assert.equal(proxy.connectionCount, 1);
    await c.client.end();
    await waitFor('the proxied pair to close', () => proxy.connectionCount === 0);
  });

  test('resetAll kills clients with a connection reset', async () => {
    const c = await connect(viaProxy());
    proxy.resetAll();
    const error = await waitFor('the client to see the reset', () => c.errors[0]);
    assert.ok(
      (error as NodeJS.ErrnoException).code === 'ECONNRESET' || /terminated unexpectedly/.test(error.message),
      `unexpected error: ${error.message}`,
    );
    assert.equal(proxy.connectionCount, 0);
  });

  test('refuse makes connects fail until accept, passThrough or the refusal expiring', async () => {
    const survivor = await connect(viaProxy());
    await proxy.refuse();
    await assert.rejects(connect(viaProxy()), { code: 'ECONNREFUSED' });
    assert.equal((await survivor.client.query('SELECT 1 AS ok')).rows[0].ok, 1); // existing pairs are kept
    await proxy.accept();
    await (await connect(viaProxy())).client.end();

    await proxy.refuse();
    proxy.passThrough(); // clears refusals too
    await proxy.accept(); // joins the listen that passThrough started
    await (await connect(viaProxy())).client.end();

    await proxy.refuse(50);
    await assert.rejects(connect(viaProxy()), { code: 'ECONNREFUSED' });
    await waitFor('the proxy to listen again', async () => {
      await (await connect(viaProxy())).client.end();
      return true;
    });
    await survivor.client.end();
  });

  test('blackhole silently swallows traffic; passThrough restores new connections', async () => {
    const stuck = await connect(viaProxy());
    proxy.blackhole();
    const dropped = proxy.droppedBytes;
    let settled = false;
    const pending = stuck.client.query('SELECT 1').finally(() => (settled = true));
    pending.catch(() => {}); // rejected later by resetAll; asserted below
    await waitFor('the query bytes to be dropped', () => proxy.droppedBytes > dropped);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(settled, false, 'a query must not complete through a blackhole');
    assert.equal(stuck.errors.length, 0, 'a blackhole must not close the connection');

    // A new connection is accepted but never answered, so only the client's own timeout ends it.
    await assert.rejects(connect(viaProxy({ connectionTimeoutMillis: 200 })), /timeout/i);

    proxy.passThrough();
    proxy.resetAll(); // the stuck client lost its query bytes for good
    await assert.rejects(pending);
    const fresh = await connect(viaProxy());
    assert.deepEqual((await fresh.client.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
    await fresh.client.end();
  });

  test('blackhole(ms) heals by itself', async () => {
    proxy.blackhole(100);
    await waitFor('a working connection after the blackhole ends', async () => {
      const c = await connect(viaProxy({ connectionTimeoutMillis: 300 }));
      await c.client.end();
      return true;
    });
  });

  test('latency delays but preserves every byte in order', async () => {
    proxy.latency(20);
    try {
      const c = await connect(viaProxy());
      const { rows } = await c.client.query<{ n: number }>('SELECT n FROM generate_series(1, 20000) AS n');
      assert.equal(rows.length, 20000);
      assert.ok(rows.every((row, i) => row.n === i + 1));
      await c.client.end();
    } finally {
      proxy.latency(0);
    }
  });
});
