import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { ConfigError, Pool, type DisconnectedEvent, type Listener, type PoolOptions, type ReconnectedEvent } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
let counter = 0;

before(async () => {
  cluster = await PgCluster.start();
});
after(async () => {
  await cluster.destroy();
});

/** What a listener saw: every payload, and every window it reported as a possible loss. */
interface Record {
  received: Set<number>;
  windows: { from: number; to: number | undefined }[];
}

function watch(listener: Listener, record: Record): void {
  listener.on('disconnected', (event: DisconnectedEvent) => record.windows.push({ from: event.since.getTime(), to: undefined }));
  listener.on('reconnected', (event: ReconnectedEvent) => {
    const open = record.windows.at(-1);
    if (open !== undefined && open.to === undefined) open.to = Date.now();
    assert.ok(event.downtimeMillis >= 0);
  });
}

/**
 * Publishes numbered notifications from a connection of its own until stopped, and remembers when
 * each committed: a NOTIFY whose statement failed was not sent, and is not counted.
 */
function publisher(channel: string): { sent: Map<number, { start: number; done: number }>; stop(): Promise<void>; send(): Promise<number | undefined> } {
  const pool = new Pool({ ...cluster.clientConfig(), max: 1, connectionTimeoutMillis: 500, retry: false });
  pool.on('error', () => {});
  const sent = new Map<number, { start: number; done: number }>();
  let next = 0;
  let stopped = false;
  const send = async (): Promise<number | undefined> => {
    const n = ++next;
    const start = Date.now();
    try {
      await pool.query('SELECT pg_notify($1, $2)', [channel, String(n)]);
      sent.set(n, { start, done: Date.now() });
      return n;
    } catch {
      return undefined;
    }
  };
  const loop = (async () => {
    // Bounded: about 30 s at most whatever happens.
    for (let i = 0; i < 1500 && !stopped; i++) {
      await send();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  return {
    sent,
    send,
    async stop() {
      stopped = true;
      await loop;
      await pool.end();
    },
  };
}

/** Every notification that was committed but never delivered must fall inside a reported window. */
function assertLossesReported(sent: Map<number, { start: number; done: number }>, record: Record): void {
  for (const [n, times] of sent) {
    if (record.received.has(n)) continue;
    const covered = record.windows.some((w) => times.done >= w.from && times.start <= (w.to ?? Infinity));
    assert.ok(covered, `notification ${n} (sent ${times.start}..${times.done}) was lost outside every reported window ${JSON.stringify(record.windows)}`);
  }
}

function makePool(options: PoolOptions = {}, target: { host: string; port: number } = cluster): { pool: Pool; app: string } {
  const app = `listen-${process.pid}-${++counter}`;
  const pool = new Pool({ ...cluster.clientConfig(), host: target.host, port: target.port, application_name: app, listenHeartbeatMillis: 300, validationTimeoutMillis: 1000, ...options });
  return { pool, app };
}

describe('pool.listen', () => {
  test('delivers notifications, shares one session outside max, and add/remove/close work', async () => {
    const { pool, app } = makePool({ max: 1 });
    const seen: string[] = [];
    const listener = await pool.listen('orders', (msg) => void seen.push(`orders:${msg.payload}`));
    await listener.add('Invoices "q"', (msg) => void seen.push(`invoices:${msg.payload}`));
    const second = await pool.listen('orders', (msg) => void seen.push(`second:${msg.payload}`));
    // max: 1 and the LISTEN session is not counted: ordinary work still gets its connection.
    await pool.query("SELECT pg_notify('orders', 'a'), pg_notify('Invoices \"q\"', 'b')");
    await waitFor('three deliveries', () => seen.length === 3);
    assert.deepEqual(seen.sort(), ['invoices:b', 'orders:a', 'second:a']);
    assert.equal((await cluster.backendPids(app)).length, 2, 'one pool connection and one LISTEN session');
    assert.equal(pool.stats().listen?.listeners, 2);
    listener.remove('orders');
    await second.close();
    await pool.query("SELECT pg_notify('orders', 'c'), pg_notify('Invoices \"q\"', 'd')");
    await waitFor('the invoice', () => seen.includes('invoices:d'));
    assert.ok(!seen.includes('orders:c'));
    await listener.close();
    await pool.end();
  });

  test('a throwing handler goes to the error event; a bad channel is a ConfigError', async () => {
    const { pool } = makePool();
    const errors: Error[] = [];
    const got: string[] = [];
    const listener = await pool.listen('boom', (msg) => {
      got.push(msg.payload ?? '');
      throw new Error(`handler failed on ${msg.payload}`);
    });
    listener.on('error', (error) => errors.push(error));
    await pool.query("SELECT pg_notify('boom', '1')");
    await pool.query("SELECT pg_notify('boom', '2')");
    await waitFor('both errors', () => errors.length === 2);
    assert.deepEqual(got, ['1', '2'], 'the session survived the first throw');
    await assert.rejects(pool.listen('', () => {}), ConfigError);
    await assert.rejects(pool.listen('x'.repeat(64), () => {}), ConfigError);
    await pool.end();
    await assert.rejects(pool.listen('late', () => {}));
  });

  for (const fault of ['backend killed', 'fast restart', 'idle_session_timeout'] as const) {
    test(`${fault}: reconnects, re-listens, reports the window, and delivers what is sent afterwards`, async () => {
      const { pool, app } = makePool(fault === 'idle_session_timeout' ? { listenHeartbeatMillis: 5000 } : {});
      const record: Record = { received: new Set(), windows: [] };
      const channel = `chan_${counter}`;
      let resynced = 0;
      const listener = await pool.listen(channel, (msg) => void record.received.add(Number(msg.payload)), { onReconnect: () => void resynced++ });
      watch(listener, record);
      const pub = publisher(channel);
      await waitFor('some deliveries', () => record.received.size >= 5);
      const reconnected = once(listener, 'reconnected');
      if (fault === 'backend killed') await cluster.terminateBackends(app);
      else if (fault === 'fast restart') await cluster.restart('fast');
      else await cluster.query(`ALTER ROLE ${cluster.user} SET idle_session_timeout = '500ms'`).then(() => cluster.terminateBackends(app));
      await reconnected;
      if (fault === 'idle_session_timeout') await cluster.query(`ALTER ROLE ${cluster.user} RESET idle_session_timeout`);
      assert.ok(resynced >= 1, 'onReconnect ran');
      const after = await (async () => {
        for (let i = 0; i < 50; i++) {
          const n = await pub.send();
          if (n !== undefined) return n;
        }
        return undefined;
      })();
      assert.ok(after !== undefined, 'the publisher got through after the fault');
      await waitFor(`notification ${after} after reconnected`, () => record.received.has(after));
      await pub.stop();
      assertLossesReported(pub.sent, record);
      assert.ok(pool.stats().listen !== undefined && pool.stats().listen!.reconnects >= 1);
      await pool.end();
    });
  }

  for (const fault of ['blackhole', 'reset', 'refuse'] as const) {
    test(`network ${fault}: the heartbeat notices, the listener comes back, losses are inside reported windows`, async () => {
      const proxy = await FaultProxy.start(cluster);
      const { pool } = makePool({}, { host: proxy.host, port: proxy.port });
      pool.on('error', () => {});
      const record: Record = { received: new Set(), windows: [] };
      const channel = `net_${counter}`;
      const listener = await pool.listen(channel, (msg) => void record.received.add(Number(msg.payload)));
      watch(listener, record);
      const pub = publisher(channel);
      await waitFor('some deliveries', () => record.received.size >= 5);
      const disconnected = once(listener, 'disconnected');
      if (fault === 'blackhole') proxy.blackhole();
      else if (fault === 'reset') proxy.resetAll();
      else {
        proxy.resetAll();
        await proxy.refuse();
      }
      await disconnected;
      const reconnected = once(listener, 'reconnected');
      proxy.passThrough();
      await proxy.accept();
      await reconnected;
      const n = await pub.send();
      assert.ok(n !== undefined);
      await waitFor(`notification ${n} after reconnected`, () => record.received.has(n));
      await pub.stop();
      assertLossesReported(pub.sent, record);
      await pool.end();
      await proxy.close();
    });
  }

  test('idle_session_timeout shorter than listenHeartbeatMillis: the heartbeat comes often enough to keep the session', async () => {
    // Default heartbeat (5 s); the server ends sessions idle for 1 s.
    const { pool } = makePool({ listenHeartbeatMillis: undefined, options: '-c idle_session_timeout=1000' });
    const record: Record = { received: new Set(), windows: [] };
    const listener = await pool.listen('short_idle', (msg) => void record.received.add(Number(msg.payload)));
    watch(listener, record);
    const pub = publisher('short_idle');
    const t0 = Date.now();
    // Notifications reach an idle session without ending its idleness: only the heartbeat keeps it.
    await waitFor('deliveries over four idle timeouts', () => [...record.received].some((n) => (pub.sent.get(n)?.start ?? 0) > t0 + 4000));
    await pub.stop();
    assert.deepEqual(record.windows, [], 'the session was never lost');
    assert.equal(pool.stats().listen?.reconnects, 0);
    await pool.end();
  });

  test('a reconnect stuck on a dark network is retried as soon as the pool reaches the server again', async () => {
    const proxy = await FaultProxy.start(cluster);
    // Attempts are never cut for silence: only the pool's recovery can free a stuck LISTEN reconnect.
    const bound = 2_147_483_647;
    const { pool } = makePool({ connectionTimeoutMillis: bound, connectAttemptTimeoutMillis: bound, max: 1 }, { host: proxy.host, port: proxy.port });
    pool.on('error', () => {});
    const record: Record = { received: new Set(), windows: [] };
    const listener = await pool.listen('stuck', (msg) => void record.received.add(Number(msg.payload)));
    watch(listener, record);
    const pub = publisher('stuck');
    await waitFor('some deliveries', () => record.received.size >= 5);
    const disconnected = once(listener, 'disconnected');
    proxy.blackhole();
    await disconnected;
    await waitFor('a reconnect attempt under way', () => pool.stats().listen?.state === 'connecting');
    // New connections are now refused, so the pool's own opens fail fast: an outage it will see end.
    await proxy.refuse();
    const read = pool.query('SELECT 1 AS one');
    await waitFor('the pool to fail an open', () => pool.stats().connectErrors > 0);
    proxy.passThrough();
    await proxy.accept();
    assert.equal((await read).rows[0]?.one, 1);
    // Without the retry it would wait for ever: its attempt is never cut.
    await waitFor('the LISTEN session back', () => pool.stats().listen?.state === 'listening', { timeoutMs: 30_000 });
    assert.equal(record.windows.at(-1)?.to !== undefined, true, 'reconnected closed the reported window');
    const n = await pub.send();
    assert.ok(n !== undefined);
    await waitFor(`notification ${n} after reconnected`, () => record.received.has(n));
    await pub.stop();
    assertLossesReported(pub.sent, record);
    await pool.end();
    await proxy.close();
  });

  test('close() and end() do not hang while the network is dark', async () => {
    const proxy = await FaultProxy.start(cluster);
    const { pool } = makePool({}, { host: proxy.host, port: proxy.port });
    const listener = await pool.listen('dark', () => {});
    proxy.blackhole();
    await listener.close();
    await pool.end();
    assert.equal(pool.ended, true);
    await proxy.close();
  });
});
