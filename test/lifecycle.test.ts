import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { Pool, type EvictionEvent, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
let counter = 0;

before(async () => {
  cluster = await PgCluster.start();
});
after(async () => {
  await cluster.destroy();
});

function makePool(options: PoolOptions = {}): { pool: Pool; app: string } {
  const app = `lifecycle-${process.pid}-${++counter}`;
  return { pool: new Pool({ ...cluster.clientConfig(), application_name: app, ...options }), app };
}

async function serverConnections(app: string): Promise<number> {
  const rows = await cluster.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [app]);
  return rows[0]?.n ?? 0;
}

describe('min', () => {
  test('opens min connections up front and keeps them open, unlike pg.Pool', async () => {
    const { pool, app } = makePool({ min: 3, max: 5 });
    try {
      await waitFor('three warm connections', () => pool.idleCount === 3);
      assert.equal(await serverConnections(app), 3);
      await cluster.terminateBackends(app);
      await waitFor('min restored after the kill', () => pool.idleCount === 3 && pool.stats().evictions.died === 3);
      assert.equal(await serverConnections(app), 3);
    } finally {
      await pool.end();
    }
  });

  test('idle timeout closes the extras but keeps min', async () => {
    const { pool } = makePool({ min: 1, max: 4, idleTimeoutMillis: 100 });
    try {
      await Promise.all([1, 2, 3, 4].map(() => pool.query('SELECT pg_sleep(0.05)')));
      assert.equal(pool.totalCount, 4);
      await waitFor('extras to idle out', () => pool.totalCount === 1);
      assert.equal(pool.stats().evictions['idle-timeout'], 3);
      assert.equal(pool.idleCount, 1);
    } finally {
      await pool.end();
    }
  });
});

describe('lifetimes', () => {
  test('connections retire at their lifetime, spread by jitter, and min is replaced', async () => {
    const size = 12;
    // 3 s (less up to half): twelve TLS logins on a loaded machine must all be open before the first retires.
    const { pool } = makePool({ min: size, max: size, maxLifetimeSeconds: 3, maxLifetimeJitter: 0.5 });
    const retiredAt: number[] = [];
    pool.on('evict', (event: EvictionEvent) => {
      if (event.reason === 'lifetime') retiredAt.push(performance.now());
    });
    try {
      await waitFor('the pool to warm', () => pool.idleCount === size);
      await waitFor('every first-generation connection to retire', () => retiredAt.length >= size, { timeoutMs: 15_000 });
      // Jitter of up to 50 % spreads retirements over a second and a half, across several maintenance
      // ticks; without it all twelve would go in the same tick.
      const distinctTicks = new Set(retiredAt.map((t) => Math.round(t / 50))).size;
      assert.ok(distinctTicks >= 2, `retirements fell in ${distinctTicks} tick(s)`);
      await waitFor('min restored', () => pool.idleCount === size);
    } finally {
      await pool.end();
    }
  });

  test('a checked-out connection past its lifetime is closed when released', async () => {
    const { pool } = makePool({ max: 1, maxLifetimeSeconds: 0.2, maxLifetimeJitter: 0 });
    try {
      const client = await pool.connect();
      await waitFor('the lifetime to pass', () => pool.expiredCount === 1);
      client.release();
      assert.equal(pool.stats().evictions.lifetime, 1);
      assert.equal(pool.totalCount, 0);
    } finally {
      await pool.end();
    }
  });

  test('maxLifetimeSeconds 0 means never, as in pg', async () => {
    const { pool } = makePool({ max: 1, maxLifetimeSeconds: 0, keepaliveIntervalMillis: 50 });
    try {
      await pool.query('SELECT 1');
      // Let a few maintenance ticks pass (keepalive pings mark them) and check nothing retired.
      await waitFor('several keepalive pings', () => pool.stats().validations >= 3);
      assert.equal(pool.stats().evictions.lifetime, 0);
      assert.equal(pool.expiredCount, 0);
    } finally {
      await pool.end();
    }
  });
});

describe('keepalive', () => {
  test('idle connections are pinged in the background, without disturbing idle eviction', async () => {
    const { pool } = makePool({ max: 2, keepaliveIntervalMillis: 50, idleTimeoutMillis: 600 });
    try {
      await Promise.all([pool.query('SELECT pg_sleep(0.02)'), pool.query('SELECT pg_sleep(0.02)')]);
      await waitFor('keepalive pings', () => pool.stats().validations >= 4);
      assert.equal(pool.stats().failedValidations, 0);
      // Pings are not use: the connections still age out on the idle timeout.
      await waitFor('idle eviction', () => pool.totalCount === 0);
      assert.equal(pool.stats().evictions['idle-timeout'], 2);
    } finally {
      await pool.end();
    }
  });

  test('TCP keepalive is on by default, with a useful first-probe delay', { skip: !hasSs() && 'needs ss (iproute2)' }, async () => {
    const { pool } = makePool({ max: 1 });
    try {
      assert.equal(pool.options.keepAlive, true);
      assert.equal(pool.options.keepAliveInitialDelayMillis, 30_000);
      const client = await pool.connect();
      try {
        const localPort = (client as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort;
        // The kernel's own view of the socket: a keepalive timer is armed on it.
        const line = execFileSync('ss', ['-tnoH', 'state', 'established', `sport = :${localPort}`], { encoding: 'utf8' });
        assert.match(line, /timer:\(keepalive,/);
      } finally {
        client.release();
      }
    } finally {
      await pool.end();
    }
  });
});

function hasSs(): boolean {
  try {
    execFileSync('ss', ['-V']);
    return true;
  } catch {
    return false;
  }
}

describe('log option', () => {
  test("pg's `log` option hears connections open and close, without secrets", async () => {
    const lines: string[] = [];
    const { pool } = makePool({ max: 1, log: (...parts: unknown[]) => lines.push(parts.map(String).join(' ')) });
    try {
      await pool.query('SELECT 1');
    } finally {
      await pool.end();
    }
    assert.ok(lines.some((l) => l.includes('opened a connection')), lines.join('\n'));
    assert.ok(lines.some((l) => l.includes('closing a connection (pool-ended)')), lines.join('\n'));
    assert.ok(!lines.some((l) => l.includes(cluster.password)));
  });
});

describe('maxUses and release hygiene', () => {
  test('maxUses retires a connection after that many checkouts', async () => {
    const { pool } = makePool({ max: 1, maxUses: 3 });
    try {
      for (let i = 0; i < 3; i++) await pool.query('SELECT 1');
      assert.equal(pool.stats().evictions['max-uses'], 1);
      assert.equal(pool.totalCount, 0);
    } finally {
      await pool.end();
    }
  });

  test('an SQL error does not cost the connection, unlike pg.Pool', async () => {
    const { pool } = makePool({ max: 1 });
    try {
      const before = (await pool.query('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      await assert.rejects(pool.query('SELECT * FROM no_such_table'), { code: '42P01' });
      const afterwards = (await pool.query('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
      assert.equal(afterwards, before);
    } finally {
      await pool.end();
    }
  });
});
