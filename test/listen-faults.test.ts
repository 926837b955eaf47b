// pool.listen() under the faults test/listen.test.ts does not cover: a crash with the server down
// for 3 s, a failover to a promoted standby on a multi-host pool, and PgBouncer, where transaction
// pooling must be refused loudly instead of delivering nothing.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { ListenError, Pool } from '../src/index.js';
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
});
