// pool.listen() under the faults test/listen.test.ts does not cover: a crash with the server down
// for 3 s, a failover to a promoted standby on a multi-host pool, and PgBouncer, where transaction
// pooling must be refused loudly instead of delivering nothing. Then wrong setups, each of which
// must reject with an error that says what to do: a standby as the only host, a full server, a
// wrong password.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { AbortedError, ListenError, Pool } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { Bouncer, pgbouncerBinary } from './harness/pgbouncer.js';
import { ReplicaSet } from './harness/replication.js';
import { waitFor } from './harness/wait.js';

const noBouncer = !pgbouncerBinary() && 'pgbouncer is not installed (.ci/run installs it)';

let cluster: PgCluster;
before(async () => {
  cluster = await PgCluster.start();
});
after(() => cluster?.destroy());

/** A TCP address whose server can change under it (a moved DNS name or virtual IP); moving cuts every connection. */
async function movingAddress(port: number): Promise<{ port: number; moveTo(port: number): void; close(): Promise<void> }> {
  let to = port;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(to, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => sockets.delete(socket));
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cut = (): void => {
    for (const socket of sockets) socket.destroy();
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    moveTo(next) {
      to = next;
      cut();
    },
    close: () => new Promise<void>((resolve) => {
      cut();
      server.close(() => resolve());
    }),
  };
}

/** Sends NOTIFYs until one is delivered (the publisher itself may meet the outage); returns its payload. */
async function deliveredAfter(publisher: Pool, channel: string, received: Set<string>): Promise<string> {
  for (let i = 0; i < 50; i++) {
    const payload = `after-${i}`;
    const sent = await publisher.query('SELECT pg_notify($1, $2)', [channel, payload]).then(() => true, () => false);
    if (sent) {
      await waitFor(`notification ${payload}`, () => received.has(payload));
      return payload;
    }
    await delay(100);
  }
  throw new Error('no NOTIFY got through after the fault');
}

describe('pool.listen() under more faults', { timeout: 120_000 }, () => {
  test('a crash with the server down for 3 s: disconnected, then reconnected, and later NOTIFYs arrive', async () => {
    const pool = new Pool({ ...cluster.clientConfig(), listenHeartbeatMillis: 300 });
    const publisher = new Pool({ ...cluster.clientConfig(), max: 1, retry: false, connectionTimeoutMillis: 1000 });
    pool.on('error', () => {});
    publisher.on('error', () => {});
    const received = new Set<string>();
    try {
      const listener = await pool.listen('crash_chan', (msg) => void received.add(msg.payload ?? ''));
      await publisher.query("SELECT pg_notify('crash_chan', 'before')");
      await waitFor('the first notification', () => received.has('before'));
      const disconnected = once(listener, 'disconnected');
      const reconnected = once(listener, 'reconnected');
      await cluster.crash();
      await disconnected;
      await delay(3000); // the outage itself: the server stays down this long
      await cluster.startAgain();
      const [event] = (await reconnected) as [{ downtimeMillis: number; channels: string[] }];
      assert.deepEqual(event.channels, ['crash_chan']);
      assert.ok(event.downtimeMillis > 0);
      await deliveredAfter(publisher, 'crash_chan', received);
      await listener.close();
    } finally {
      await Promise.all([pool.end(), publisher.end()]);
    }
  });

  test('failover on a multi-host pool: the listener re-homes to the promoted standby', async () => {
    const set = await ReplicaSet.start();
    const hosts = `127.0.0.1:${set.primary.port},127.0.0.1:${set.standby.port}`;
    const url = `postgres://postgres:${set.primary.password}@${hosts}/postgres?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=${encodeURIComponent(set.primary.caFile ?? '')}`;
    const pool = new Pool({ connectionString: url, listenHeartbeatMillis: 300, hostRecheckMillis: 200 });
    const publisher = new Pool({ connectionString: url, max: 1, retry: false, connectionTimeoutMillis: 1000 });
    pool.on('error', () => {});
    publisher.on('error', () => {});
    const received = new Set<string>();
    try {
      const listener = await pool.listen('ha_chan', (msg) => void received.add(msg.payload ?? ''));
      await publisher.query("SELECT pg_notify('ha_chan', 'on-primary')");
      await waitFor('the first notification', () => received.has('on-primary'));
      const reconnected = once(listener, 'reconnected');
      await set.primary.stop('fast');
      await set.promoteStandby();
      await reconnected;
      const payload = await deliveredAfter(publisher, 'ha_chan', received);
      assert.ok(received.has(payload));
      const rows = await set.standby.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE '%pg_listening_channels%' OR query LIKE 'LISTEN%'");
      assert.ok((rows[0]?.n ?? 0) >= 1, 'the listening session is on the new primary');
      await listener.close();
    } finally {
      await Promise.all([pool.end(), publisher.end()]);
      await set.destroy();
    }
  });

  test('behind PgBouncer: transaction pooling is refused with a ListenError; session pooling works when declared', { skip: noBouncer }, async () => {
    const transaction = await Bouncer.start(cluster, { poolMode: 'transaction' });
    const session = await Bouncer.start(cluster, { poolMode: 'session' });
    const viaTransaction = new Pool({ ...transaction.clientConfig() });
    const viaSession = new Pool({ ...session.clientConfig() });
    try {
      const error = await viaTransaction.listen('pooled_chan', () => {}).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ListenError, String(error));
      assert.match(error.message, /connection pooler.*transaction pooling.*sessionPooler: true/s);
      assert.equal(viaTransaction.stats().listen?.channels, 0);
      const received = new Set<string>();
      const listener = await viaSession.listen('pooled_chan', (msg) => void received.add(msg.payload ?? ''), { sessionPooler: true });
      await viaSession.query("SELECT pg_notify('pooled_chan', 'through-session-pooler')");
      await waitFor('the notification through the session pooler', () => received.has('through-session-pooler'));
      await listener.close();
    } finally {
      await Promise.all([viaTransaction.end(), viaSession.end()]);
      await Promise.all([transaction.destroy(), session.destroy()]);
    }
  });

  test('a standby as the only host: a ListenError that says to point at the primary, and no session left open', async () => {
    const set = await ReplicaSet.start();
    const app = `listen-standby-${process.pid}`;
    const pool = new Pool({ ...set.standby.clientConfig(), application_name: app });
    try {
      const error = await pool.listen('standby_chan', () => {}).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ListenError, String(error));
      assert.match(error.message, /during recovery.*standby.*primary/s);
      assert.equal((error.cause as { code?: string }).code, '25006', "the server's error is the cause");
      await waitFor('the LISTEN session to close', async () => (await set.standby.backendPids(app)).length === 0);
      assert.equal(pool.stats().listen?.state, 'idle');
    } finally {
      await pool.end();
      await set.destroy();
    }
  });

  test('a server with no connection slots left: a ListenError naming max_connections at connectionTimeoutMillis; an abort rejects', async () => {
    const full = await PgCluster.start({ settings: { max_connections: 4, superuser_reserved_connections: 0 } });
    const fillers: pg.Client[] = [];
    const pool = new Pool({ ...full.clientConfig(), connectionTimeoutMillis: 1500 });
    try {
      for (let i = 0; i < 4; i++) {
        const client = new pg.Client(full.clientConfig());
        client.on('error', () => {});
        await client.connect();
        fillers.push(client);
      }
      const error = await pool.listen('full_chan', () => {}).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ListenError, String(error));
      assert.match(error.message, /connectionTimeoutMillis.*no connection slots left.*max_connections.*beside the pool's max/s);
      assert.equal((error.cause as { code?: string }).code, '53300');
      const controller = new AbortController();
      const aborted = pool.listen('full_chan', () => {}, { signal: controller.signal }).then(() => undefined, (e: unknown) => e);
      controller.abort();
      assert.ok((await aborted) instanceof AbortedError, 'an abort rejects; it does not hand back a listener that listens to nothing');
      assert.equal(pool.stats().listen?.channels, 0);
      // A slot frees: a new pool.listen() gets it.
      await fillers.pop()?.end();
      const received = new Set<string>();
      const listener = await pool.listen('full_chan', (msg) => void received.add(msg.payload ?? ''));
      await fillers.pop()?.end();
      await pool.query("SELECT pg_notify('full_chan', 'room')");
      await waitFor('the notification', () => received.has('room'));
      await listener.close();
    } finally {
      await pool.end();
      await Promise.all(fillers.map((client) => client.end()));
      await full.destroy();
    }
  });

  test('a wrong password: pool.listen rejects at once with a ListenError that keeps the server error', async () => {
    const pool = new Pool({ ...cluster.clientConfig(), password: 'not-the-password' });
    try {
      const error = await pool.listen('auth_chan', () => {}).then(() => undefined, (e: unknown) => e);
      assert.ok(error instanceof ListenError, String(error));
      assert.match(error.message, /could not start.*password authentication failed.*check the user, password and database name/s);
      assert.equal((error.cause as { code?: string }).code, '28P01');
      assert.equal(pool.stats().listen?.state, 'idle', 'nothing keeps retrying for nobody');
    } finally {
      await pool.end();
    }
  });

  test('a login refused while reconnecting: the error event says why, and the listener keeps trying until it works', async () => {
    const role = `listen_role_${process.pid}`;
    await cluster.query(`CREATE ROLE ${role} LOGIN PASSWORD 'first'`);
    const pool = new Pool({ ...cluster.clientConfig(), user: role, password: 'first', application_name: role, listenHeartbeatMillis: 300 });
    pool.on('error', () => {});
    try {
      const listener = await pool.listen('role_chan', () => {});
      const errors: Error[] = [];
      listener.on('error', (error) => errors.push(error));
      await cluster.query(`ALTER ROLE ${role} PASSWORD 'second'`);
      await cluster.terminateBackends(role);
      await waitFor('the refused login to be reported', () => errors.length > 0);
      assert.ok(errors[0] instanceof ListenError, String(errors[0]));
      assert.match(errors[0].message, /password authentication failed.*check the user, password.*retried/s);
      // Not events.once: it rejects on the 'error' events that go on until the password is back.
      let reconnected = false;
      listener.on('reconnected', () => void (reconnected = true));
      await cluster.query(`ALTER ROLE ${role} PASSWORD 'first'`);
      await waitFor('the listener to reconnect', () => reconnected);
      await listener.close();
    } finally {
      await pool.end();
      await cluster.query(`DROP ROLE ${role}`);
    }
  });

  test('the one host turns out a standby on reconnect: reported, retried, and listening again on a primary', async () => {
    const set = await ReplicaSet.start();
    const address = await movingAddress(set.primary.port);
    const pool = new Pool({ ...set.primary.clientConfig(), port: address.port, listenHeartbeatMillis: 300 });
    pool.on('error', () => {});
    try {
      const received = new Set<string>();
      const listener = await pool.listen('moving_chan', (msg) => void received.add(msg.payload ?? ''));
      const errors: Error[] = [];
      listener.on('error', (error) => errors.push(error));
      let reconnected = false;
      listener.on('reconnected', () => void (reconnected = true));
      address.moveTo(set.standby.port);
      await waitFor('the refusal on the standby to be reported', () => errors.length > 0);
      assert.match(errors[0]?.message ?? '', /during recovery.*standby.*primary/s);
      assert.deepEqual(listener.channels, ['moving_chan'], 'the channel is kept');
      address.moveTo(set.primary.port);
      await waitFor('the listener to listen again', () => reconnected);
      await pool.query("SELECT pg_notify('moving_chan', 'back')");
      await waitFor('the notification', () => received.has('back'));
      await listener.close();
    } finally {
      await pool.end();
      await address.close();
      await set.destroy();
    }
  });
});
