// pg-lifeline's Client on real servers: password over TLS, keepalive on by default, a password
// provider shared by clients, multi-host routing (a connection string, target_session_attrs on a
// primary and a standby), the error that lists every host when none answers, and the silence watch.
import assert from 'node:assert/strict';
import { createServer, Socket, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as pg from 'pg';
import { Client, ConfigError, ConnectFailedError, ConnectionLostError, HostsUnreachableError, OutcomeUnknownError, sequelizeRetryMatch } from '../src/index.js';
import * as lifelinePg from '../src/pg.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { ReplicaSet } from './harness/replication.js';
import { settleWithin, waitFor } from './harness/wait.js';

let cluster: PgCluster;
let set: ReplicaSet;
let deadPort: number;

/** A port nothing listens on: bound, then closed. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

before(async () => {
  [cluster, set, deadPort] = await Promise.all([PgCluster.start(), ReplicaSet.start(), closedPort()]);
});

after(async () => {
  await Promise.all([cluster?.destroy(), set?.destroy()]);
});

async function answer(client: Client): Promise<unknown> {
  await client.connect();
  try {
    return (await client.query<{ n: number }>('SELECT 1 AS n')).rows;
  } finally {
    await client.end();
  }
}

describe('Client', () => {
  test('is a pg.Client, and the one pg-lifeline/pg exports', () => {
    assert.equal(lifelinePg.Client, Client);
    assert.ok(new Client(cluster.clientConfig()) instanceof pg.Client);
  });

  test('connects with a password over TLS (scram-sha-256, verified certificate)', async () => {
    assert.deepEqual(await answer(new Client(cluster.clientConfig())), [{ n: 1 }]);
  });

  test('turns TCP keepalive on by default, with the Pool’s 30 s delay; an explicit keepAlive: false stands', async () => {
    const calls: unknown[][] = [];
    const original = Socket.prototype.setKeepAlive;
    Socket.prototype.setKeepAlive = function (this: Socket, ...args: unknown[]) {
      calls.push(args);
      return original.apply(this, args as Parameters<typeof original>);
    };
    try {
      await answer(new Client(cluster.clientConfig()));
      assert.deepEqual(calls, [[true, 30_000]]);
      calls.length = 0;
      await answer(new Client({ ...cluster.clientConfig(), keepAlive: false }));
      assert.deepEqual(calls, []);
    } finally {
      Socket.prototype.setKeepAlive = original;
    }
  });

  test('a password provider is called with the host, and shared by clients built with it', async () => {
    const targets: unknown[] = [];
    const { password, ...config } = cluster.clientConfig();
    const provider = (target: unknown): { password: string; expiresAt: number } => {
      targets.push(target);
      return { password: password as string, expiresAt: Date.now() + 3_600_000 };
    };
    assert.deepEqual(await answer(new Client({ ...config, password: provider })), [{ n: 1 }]);
    assert.deepEqual(await answer(new Client({ ...config, password: provider })), [{ n: 1 }]);
    assert.deepEqual(targets, [{ host: cluster.host, port: cluster.port, user: config.user, database: config.database }]);
  });

  test('a password the server refuses is dropped from the cache: the next client asks the provider again', async () => {
    const { password, ...config } = cluster.clientConfig();
    let calls = 0;
    const provider = (): string => (++calls === 1 ? 'stale-token' : (password as string));
    await assert.rejects(new Client({ ...config, password: provider }).connect(), (error: unknown) => {
      assert.ok(error instanceof ConnectFailedError, String(error));
      assert.equal(error.code, '28P01', "pg's code is kept");
      return true;
    });
    assert.deepEqual(await answer(new Client({ ...config, password: provider })), [{ n: 1 }]);
    assert.equal(calls, 2);
  });

  test('a multi-host connection string: the first host that answers', async () => {
    const { password, ssl, user, database } = cluster.clientConfig();
    const connectionString = `postgresql://${user}@127.0.0.1:${deadPort},127.0.0.1:${cluster.port}/${database}`;
    const client = new Client({ connectionString, password, ssl });
    assert.deepEqual(await answer(client), [{ n: 1 }]);
    assert.equal(client.port, cluster.port);
  });

  test('target_session_attrs=primary picks the primary of two hosts listed standby first', async () => {
    const { primary, standby } = set;
    const config = primary.clientConfig();
    const hosts = [{ host: standby.host, port: standby.port }, { host: primary.host, port: primary.port }];
    for (const attrs of ['primary', 'standby'] as const) {
      const client = new Client({ ...config, hosts, targetSessionAttrs: attrs });
      await client.connect();
      try {
        const rows = (await client.query<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby')).rows;
        assert.deepEqual(rows, [{ standby: attrs === 'standby' }]);
      } finally {
        await client.end();
      }
    }
    // The same through Client.configure, the form for libraries that pass only some options on.
    const Configured = Client.configure({ hosts, targetSessionAttrs: 'read-write' });
    const client = new Configured({ ...config, host: 'ignored.invalid' });
    assert.ok(client instanceof Client);
    await client.connect();
    assert.deepEqual((await client.query('SELECT pg_is_in_recovery() AS standby')).rows, [{ standby: false }]);
    await client.end();
  });

  test('no host answers: one error lists each host, with the code of the last failure', async () => {
    const config = cluster.clientConfig();
    const client = new Client({ ...config, host: '127.0.0.1,127.0.0.1', port: `${deadPort},${deadPort}` as unknown as number });
    await assert.rejects(client.connect(), (error: unknown) => {
      assert.ok(error instanceof HostsUnreachableError, String(error));
      assert.equal(error.code, 'ECONNREFUSED');
      assert.equal(error.failures.length, 2);
      assert.equal(sequelizeRetryMatch({ original: error }), true, 'nothing was sent: safe to retry');
      assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${deadPort}: .*ECONNREFUSED.*; 127\\.0\\.0\\.1:${deadPort}`));
      return true;
    });
  });

  test('a statement that meets the end of its connection is explained; the next is refused unsent', async () => {
    const client = new Client({ ...cluster.clientConfig(), application_name: `client-kill-${process.pid}` });
    client.on('error', () => undefined);
    await client.connect();
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
    const failed = assert.rejects(client.query('SELECT pg_sleep(30)'), (error: unknown) => {
      assert.ok(error instanceof OutcomeUnknownError, String(error));
      assert.equal(error.code, '57P01');
      assert.equal(error.diagnosis.cause, 'admin-terminated');
      assert.equal(sequelizeRetryMatch({ parent: error, original: error }), false, 'it may have run: never retried');
      return true;
    });
    await waitFor('the statement to run', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`, [pid])).length === 1);
    await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
    await failed;
    await assert.rejects(client.query('SELECT 1'), (error: unknown) => {
      assert.ok(error instanceof ConnectionLostError && !(error instanceof OutcomeUnknownError), String(error));
      assert.equal(error.outcome, 'not-applied');
      assert.equal(sequelizeRetryMatch({ parent: error, original: error }), true, 'never sent: safe to retry');
      return true;
    });
    await client.end().catch(() => undefined);
  });

  test('inside a transaction, a connection gone dark is cut: its backend sits idle in transaction, which counts as idle', async () => {
    const proxy = await FaultProxy.start(cluster);
    const client = new Client({ ...cluster.clientConfig(), host: proxy.host, port: proxy.port, monitorGraceMillis: 300 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('BEGIN');
      await client.query('SELECT 1');
      // This connection's bytes are dropped from now on; the watch's own check connections get through.
      proxy.darkenExisting();
      // Bounded only so that a regression fails instead of hanging the suite: the watch has no reason to wait for it.
      const outcome = await settleWithin(client.query('SELECT 2'), 60_000);
      assert.ok(typeof outcome === 'object', `the statement failed instead of ${String(outcome)}`);
      assert.ok(outcome.error instanceof OutcomeUnknownError, String(outcome.error));
      assert.match(outcome.error.message, /reply never arrived/);
    } finally {
      await client.end().catch(() => undefined);
      await proxy.close();
    }
  });

  test('sequelizeRetryMatch is an arrow function, as retry-as-promised needs, and reads the wrapped error', () => {
    // retry-as-promised first tries `err instanceof match`; only a function without a prototype makes that throw and gets called.
    assert.equal((sequelizeRetryMatch as { prototype?: unknown }).prototype, undefined);
    const unique = Object.assign(new Error('duplicate key value violates unique constraint "items_pkey"'), { code: '23505', severity: 'ERROR' });
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    assert.equal(sequelizeRetryMatch({ name: 'SequelizeUniqueConstraintError', parent: unique, original: unique }), false);
    assert.equal(sequelizeRetryMatch({ name: 'SequelizeConnectionRefusedError', parent: refused, original: refused }), true);
    assert.equal(sequelizeRetryMatch(new Error('Connection terminated unexpectedly')), false, 'a sent statement whose connection dropped may have run');
  });

  test('a bad option is a ConfigError naming it', () => {
    assert.throws(() => new Client({ monitorGraceMillis: -1 }), (error: unknown) => error instanceof ConfigError && error.option === 'monitorGraceMillis');
    assert.throws(() => new Client({ targetSessionAttrs: 'leader' as never }), (error: unknown) => error instanceof ConfigError && error.option === 'targetSessionAttrs');
  });
});
