import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { PgCluster } from './harness/cluster.js';
import { Bouncer, pgbouncerBinary } from './harness/pgbouncer.js';
import { ReplicaSet } from './harness/replication.js';
import { waitFor } from './harness/wait.js';

/** A client plus what happened to it, recorded from the start so no event is missed. */
interface Tracked {
  client: pg.Client;
  errors: Error[];
  ended: boolean;
}

const opened = new Set<pg.Client>();

async function connect(config: pg.ClientConfig): Promise<Tracked> {
  const client = new pg.Client({ connectionTimeoutMillis: 5_000, ...config });
  const tracked: Tracked = { client, errors: [], ended: false };
  client.on('error', (error) => tracked.errors.push(error));
  client.on('end', () => (tracked.ended = true));
  opened.add(client);
  await client.connect();
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

async function inRecovery(cluster: PgCluster): Promise<boolean | undefined> {
  const [row] = await cluster.query<{ recovery: boolean }>('SELECT pg_is_in_recovery() AS recovery');
  return row?.recovery;
}

describe('ReplicaSet', { timeout: 30_000 }, () => {
  let set: ReplicaSet;

  before(async () => {
    set = await ReplicaSet.start({ settings: { max_connections: 30 } });
  });

  after(async () => {
    await closeClients();
    await set?.destroy();
  });

  test('the standby is a separate hot standby streaming from the primary', async () => {
    assert.notEqual(set.standby.port, set.primary.port);
    assert.notEqual(set.standby.dataDir, set.primary.dataDir);
    assert.equal(await inRecovery(set.primary), false);
    assert.equal(await inRecovery(set.standby), true);
    const [standby] = await set.standby.query<{ port: string; sockets: string; max: string }>(
      "SELECT current_setting('port') AS port, current_setting('unix_socket_directories') AS sockets, current_setting('max_connections') AS max",
    );
    assert.deepEqual(standby, { port: String(set.standby.port), sockets: set.standby.dataDir, max: '30' });
    const senders = await set.primary.query<{ state: string }>('SELECT state FROM pg_stat_replication');
    assert.deepEqual(senders, [{ state: 'streaming' }]);
  });

  test('a row written on the primary appears on the standby after waitForReplay()', async () => {
    await set.primary.query('CREATE TABLE marks (id int PRIMARY KEY, note text)');
    await set.primary.query("INSERT INTO marks VALUES (1, 'before failover')");
    await set.waitForReplay();
    assert.deepEqual(await set.standby.query('SELECT id, note FROM marks'), [{ id: 1, note: 'before failover' }]);
  });

  test('the standby refuses writes with SQLSTATE 25006', async () => {
    await assert.rejects(set.standby.query("INSERT INTO marks VALUES (2, 'on the standby')"), { code: '25006' });
    const standby = await connect(set.standby.clientConfig());
    const { rows } = await standby.client.query("SELECT current_setting('transaction_read_only') AS ro");
    assert.deepEqual(rows, [{ ro: 'on' }]);
    await standby.client.end();
  });

  test('the standby is a full PgCluster: terminateBackends and restart work, and it keeps streaming', async () => {
    const victim = await connect({ ...set.standby.clientConfig(), application_name: 'standby-victim' });
    assert.equal(await set.standby.terminateBackends('standby-victim'), 1);
    await waitFor('the victim to see its backend die', () => victim.errors[0]);

    const port = set.standby.port;
    await set.standby.restart('fast');
    assert.equal(set.standby.port, port);
    await set.primary.query("INSERT INTO marks VALUES (3, 'after standby restart')");
    await set.waitForReplay();
    assert.deepEqual(await set.standby.query('SELECT id FROM marks WHERE id = 3'), [{ id: 3 }]);
  });

  test('stopPrimary() stops only the primary', async () => {
    await set.primary.query("INSERT INTO marks VALUES (4, 'last on the old primary')");
    await set.waitForReplay();
    await set.stopPrimary('immediate');
    assert.equal(set.primary.isRunning(), false);
    await assert.rejects(set.primary.query('SELECT 1'), { code: 'ECONNREFUSED' });
    assert.equal(set.standby.isRunning(), true);
    assert.equal(await inRecovery(set.standby), true);
  });

  test('promoteStandby() makes the standby accept writes', async () => {
    const session = await connect(set.standby.clientConfig());
    const statuses: Record<string, string> = {};
    // The server reports in_hot_standby changes to sessions that were open during promotion (PG 14+).
    (session.client as unknown as { connection: NodeJS.EventEmitter }).connection.on(
      'parameterStatus',
      (message: { parameterName: string; parameterValue: string }) => (statuses[message.parameterName] = message.parameterValue),
    );
    await set.promoteStandby();
    assert.equal(await inRecovery(set.standby), false);
    await set.standby.query("INSERT INTO marks VALUES (5, 'on the new primary')");
    assert.deepEqual(
      (await set.standby.query<{ id: number }>('SELECT id FROM marks ORDER BY id')).map((row) => row.id),
      [1, 3, 4, 5],
    );
    // The old session can write too, and learns that the server left hot standby.
    await session.client.query("INSERT INTO marks VALUES (6, 'from a pre-promotion session')");
    await waitFor('the in_hot_standby report', () => statuses['in_hot_standby'] === 'off');
    await session.client.end();
  });

  test('destroy() stops both servers, removes both data dirs and is idempotent', async () => {
    const { primary, standby } = set;
    await closeClients();
    await set.destroy();
    await set.destroy();
    assert.equal(standby.isRunning(), false);
    assert.equal(existsSync(primary.dataDir), false);
    assert.equal(existsSync(standby.dataDir), false);
  });
});

const noBouncer = !pgbouncerBinary() && 'pgbouncer is not installed (.ci/run installs it)';

describe('Bouncer', { skip: noBouncer, timeout: 30_000 }, () => {
  let cluster: PgCluster;
  const bouncers: Bouncer[] = [];
  const startBouncer = async (...args: Parameters<typeof Bouncer.start>): Promise<Bouncer> => {
    const bouncer = await Bouncer.start(...args);
    bouncers.push(bouncer);
    return bouncer;
  };

  before(async () => {
    cluster = await PgCluster.start();
  });

  after(async () => {
    await closeClients();
    await Promise.all(bouncers.map((bouncer) => bouncer.destroy()));
    await cluster?.destroy();
  });

  test('transaction mode: queries work through it, on the cluster behind it', async () => {
    const bouncer = await startBouncer(cluster, { poolMode: 'transaction' });
    assert.equal(bouncer.host, '127.0.0.1');
    assert.notEqual(bouncer.port, cluster.port);
    assert.deepEqual(bouncer.clientConfig(), { host: '127.0.0.1', port: bouncer.port, user: 'postgres', database: 'postgres' });
    assert.ok(bouncer.pid !== undefined && bouncer.pid > 0);

    const c = await connect({ ...bouncer.clientConfig(), application_name: 'through-bouncer' });
    const { rows } = await c.client.query<{ port: number; mode: string }>(
      "SELECT inet_server_port() AS port, current_setting('transaction_read_only') AS mode",
    );
    assert.deepEqual(rows, [{ port: cluster.port, mode: 'off' }]);
    // A backend pid seen through the bouncer belongs to the cluster's server connection.
    assert.ok((await cluster.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [await backendPid(c.client)])).length === 1);
    await c.client.end();
  });

  test('transaction mode: one client connection moves between server backends', async () => {
    // Fresh bouncer: its only server connection is the one its readiness check opened.
    const bouncer = await startBouncer(cluster, { poolMode: 'transaction', defaultPoolSize: 2 });
    const a = await connect(bouncer.clientConfig());
    const b = await connect(bouncer.clientConfig());
    const first = await backendPid(a.client);
    await b.client.query('BEGIN');
    assert.equal(await backendPid(b.client), first); // the backend a just released
    const second = await backendPid(a.client); // b holds it now: a gets another one
    assert.notEqual(second, first);
    await b.client.query('COMMIT');
    await Promise.all([a.client.end(), b.client.end()]);
  });

  test('restart() breaks existing clients, keeps the port, and new clients work', async () => {
    const bouncer = await startBouncer(cluster, { poolMode: 'transaction' });
    const old = await connect(bouncer.clientConfig());
    const oldServerPid = await backendPid(old.client);
    const { port, pid } = bouncer;

    await bouncer.restart();
    assert.equal(bouncer.port, port);
    assert.notEqual(bouncer.pid, pid);
    await waitFor('the old client to notice the restart', () => old.errors.length > 0 || old.ended);
    await assert.rejects(old.client.query('SELECT 1'));

    const fresh = await connect(bouncer.clientConfig());
    assert.deepEqual((await fresh.client.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
    // The new pgbouncer process opened its own server connection.
    assert.notEqual(await backendPid(fresh.client), oldServerPid);
    await fresh.client.end();
  });

  test("restart('immediate') does not wait for an open transaction", async () => {
    const bouncer = await startBouncer(cluster, { poolMode: 'transaction' });
    const busy = await connect(bouncer.clientConfig());
    await busy.client.query('BEGIN');
    const started = Date.now();
    await bouncer.restart('immediate');
    assert.ok(Date.now() - started < 2_000, `restart took ${Date.now() - started} ms`);
    await waitFor('the client in a transaction to be cut off', () => busy.errors.length > 0 || busy.ended);
    const fresh = await connect(bouncer.clientConfig());
    assert.deepEqual((await fresh.client.query('SELECT 2 AS two')).rows, [{ two: 2 }]);
    await fresh.client.end();
  });

  test('session mode: a client keeps its backend, and DISCARD ALL cleans it for the next one', async () => {
    const bouncer = await startBouncer(cluster, { poolMode: 'session', defaultPoolSize: 1 });
    const a = await connect(bouncer.clientConfig());
    const pid = await backendPid(a.client);
    await a.client.query('CREATE TEMP TABLE scratch (x int)');
    await a.client.query('SELECT 1');
    assert.equal(await backendPid(a.client), pid);
    await a.client.end();

    const b = await connect(bouncer.clientConfig());
    assert.equal(await backendPid(b.client), pid); // the pool's only server, reused
    const { rows } = await b.client.query("SELECT to_regclass('pg_temp.scratch') IS NULL AS gone");
    assert.deepEqual(rows, [{ gone: true }]);
    await b.client.end();
  });

  test('stop() and destroy() end the process; destroy() is idempotent', async () => {
    const bouncer = await startBouncer(cluster, { poolMode: 'session' });
    const { pid, dir } = bouncer;
    assert.ok(pid !== undefined);
    await bouncer.stop();
    assert.equal(bouncer.pid, undefined);
    await assert.rejects(connect(bouncer.clientConfig()), { code: 'ECONNREFUSED' });
    await bouncer.destroy();
    await bouncer.destroy();
    assert.equal(existsSync(dir), false);
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
  });
});
