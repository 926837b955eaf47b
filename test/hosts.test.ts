// Multi-host connection strings and target_session_attrs, against real servers: two independent
// clusters for routing, and a primary with a streaming standby for roles.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ConfigError, ConnectFailedError, Pool, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { ReplicaSet } from './harness/replication.js';

let first: PgCluster;
let second: PgCluster;
let replicas: ReplicaSet;
before(async () => {
  [first, second, replicas] = await Promise.all([PgCluster.start(), PgCluster.start(), ReplicaSet.start()]);
  await second.query(`CREATE ROLE only_second LOGIN PASSWORD 'second-pw'`);
});
after(() => Promise.all([first?.destroy(), second?.destroy(), replicas?.destroy()]));

/** The port of the server a query lands on. */
async function portOf(pool: Pool): Promise<number> {
  return Number((await pool.query("SELECT current_setting('port') AS port")).rows[0]?.port);
}

/**
 * A URL as an app writes it: the password in it, and TLS verified against the test CA (every harness
 * server shares both).
 */
function secure(url: string): string {
  const withPassword = url.replace('postgres://postgres@', `postgres://postgres:${first.password}@`);
  return `${withPassword}${url.includes('?') ? '&' : '?'}sslmode=verify-full&sslrootcert=${encodeURIComponent(first.caFile ?? '')}`;
}

async function withPool<T>(options: PoolOptions, fn: (pool: Pool) => Promise<T>): Promise<T> {
  const pool = new Pool({ user: 'postgres', database: 'postgres', ...options, ...(options.connectionString?.startsWith('postgres://') ? { connectionString: secure(options.connectionString) } : {}) });
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

describe('host lists', () => {
  test('a multi-host URL connects to the first host that answers', async () => {
    const proxy = await FaultProxy.start(first.clientConfig());
    await proxy.refuse();
    try {
      const url = `postgres://postgres@127.0.0.1:${proxy.port},127.0.0.1:${second.port}/postgres`;
      await withPool({ connectionString: url }, async (pool) => assert.equal(await portOf(pool), second.port));
      await proxy.accept();
      // With the first host back, a new pool goes there first.
      await withPool({ connectionString: url }, async (pool) => assert.equal(await portOf(pool), first.port));
    } finally {
      await proxy.close();
    }
  });

  test('a host that failed is skipped for hostRecheckMillis, then tried first again', async () => {
    for (const [recheck, expected] of [[600_000, 'second'], [0, 'first']] as const) {
      const proxy = await FaultProxy.start(first.clientConfig());
      await proxy.refuse();
      try {
        const url = `postgres://postgres@127.0.0.1:${proxy.port},127.0.0.1:${second.port}/postgres`;
        await withPool({ connectionString: url, max: 2, hostRecheckMillis: recheck }, async (pool) => {
          const held = await pool.connect();
          try {
            assert.equal(Number((await held.query("SELECT current_setting('port') AS port")).rows[0].port), second.port);
            await proxy.accept();
            // A second connection: the first host answers again, but is it asked first?
            const next = await pool.connect();
            const port = Number((await next.query("SELECT current_setting('port') AS port")).rows[0].port);
            next.release();
            assert.equal(port, expected === 'first' ? first.port : second.port, `hostRecheckMillis ${recheck}`);
          } finally {
            held.release();
          }
        });
      } finally {
        await proxy.close();
      }
    }
  });

  test("libpq's keyword/value form, the hosts option, and host/port lists all work", async () => {
    const forms: PoolOptions[] = [
      { connectionString: `host=127.0.0.1,127.0.0.1 port=${first.port},${second.port} user=postgres password=${first.password} dbname=postgres application_name='key value' sslmode=verify-full sslrootcert=${first.caFile}` },
      { hosts: [{ host: '127.0.0.1', port: first.port }, { host: '127.0.0.1', port: second.port }], password: first.password, ssl: { ca: first.ca } },
      { host: '127.0.0.1,127.0.0.1', port: `${first.port},${second.port}` as unknown as number, password: first.password, ssl: { ca: first.ca } },
    ];
    for (const options of forms) {
      await withPool(options, async (pool) => assert.equal(await portOf(pool), first.port, JSON.stringify(options)));
    }
    await withPool(forms[0] as PoolOptions, async (pool) => {
      assert.equal((await pool.query('SHOW application_name')).rows[0]?.application_name, 'key value');
    });
  });

  test('load_balance_hosts=random spreads connections over the hosts', async () => {
    const url = `postgres://postgres@127.0.0.1:${first.port},127.0.0.1:${second.port}/postgres?load_balance_hosts=random`;
    const seen = new Set<number>();
    // Each pool opens one connection; 2^-20 is the chance 20 pools all pick the same host.
    for (let i = 0; i < 20 && seen.size < 2; i++) {
      await withPool({ connectionString: url, max: 1 }, async (pool) => seen.add(await portOf(pool)));
    }
    assert.deepEqual([...seen].sort(), [first.port, second.port].sort());
  });

  test('an authentication error stops the search instead of moving on to the next host', async () => {
    // The role exists only on the second server: libpq's rule is to stop, not to shop for a host that lets you in.
    // Under password auth the first server does not say the role is missing, only that the password failed.
    const url = `postgres://only_second:second-pw@127.0.0.1:${first.port},127.0.0.1:${second.port}/postgres`;
    await withPool({ connectionString: url }, async (pool) => {
      const error = await pool.query('SELECT 1').then(() => assert.fail('should fail'), (e: unknown) => e);
      assert.ok(error instanceof ConnectFailedError, String(error));
      assert.equal(error.sqlState, '28P01');
    });
  });

  test('a server that starts refusing writes (25006) is dropped, and the refused write lands elsewhere', async () => {
    await Promise.all([first.query('CREATE TABLE IF NOT EXISTS moved (id int)'), second.query('CREATE TABLE IF NOT EXISTS moved (id int)')]);
    const url = `postgres://postgres@127.0.0.1:${first.port},127.0.0.1:${second.port}/postgres?target_session_attrs=read-write`;
    try {
      await withPool({ connectionString: url, max: 2 }, async (pool) => {
        assert.equal(await portOf(pool), first.port);
        // What a demoted server looks like to its open sessions: writes are refused from now on.
        await first.setSetting('default_transaction_read_only', 'on');
        // Not idempotent: a refused write did not apply, so running it elsewhere is safe.
        const result = await pool.query("INSERT INTO moved VALUES (1) RETURNING current_setting('port')::int AS port");
        assert.equal(result.rows[0]?.port, second.port);
        assert.ok(pool.stats().retriesByKind['read-only'] === 1);
        assert.equal(await portOf(pool), second.port, 'new work goes to the writable server');
      });
    } finally {
      await first.resetSetting('default_transaction_read_only');
    }
  });

  test('bad host settings are refused up front', () => {
    assert.throws(() => new Pool({ targetSessionAttrs: 'leader' as never }), ConfigError);
    assert.throws(() => new Pool({ connectionString: 'postgres://a,b/db?load_balance_hosts=sometimes' }), ConfigError);
    assert.throws(() => new Pool({ hosts: [] }), ConfigError);
    assert.throws(() => new Pool({ host: 'a,b,c', port: '1,2' as unknown as number }), ConfigError);
  });
});

describe('target_session_attrs', () => {
  const both = (): string => `127.0.0.1:${replicas.standby.port},127.0.0.1:${replicas.primary.port}`;

  test('each role goes to the right server, whatever the host order', async () => {
    const cases: [string, number][] = [
      ['read-write', replicas.primary.port],
      ['primary', replicas.primary.port],
      ['read-only', replicas.standby.port],
      ['standby', replicas.standby.port],
      ['prefer-standby', replicas.standby.port],
      ['prefer-primary', replicas.primary.port],
      ['any', replicas.standby.port],
    ];
    for (const [attrs, port] of cases) {
      await withPool({ connectionString: `postgres://postgres@${both()}/postgres?target_session_attrs=${attrs}` }, async (pool) => {
        assert.equal(await portOf(pool), port, attrs);
      });
    }
  });

  test('prefer-standby falls back to the primary when no standby answers', async () => {
    const proxy = await FaultProxy.start(replicas.standby.clientConfig());
    await proxy.refuse();
    try {
      const url = `postgres://postgres@127.0.0.1:${proxy.port},127.0.0.1:${replicas.primary.port}/postgres?target_session_attrs=prefer-standby`;
      await withPool({ connectionString: url }, async (pool) => assert.equal(await portOf(pool), replicas.primary.port));
    } finally {
      await proxy.close();
    }
  });

  test('read-write with only a standby reachable waits for a primary, then times out saying why', async () => {
    const url = `postgres://postgres@127.0.0.1:${replicas.standby.port}/postgres?target_session_attrs=read-write`;
    await withPool({ connectionString: url, connectionTimeoutMillis: 500 }, async (pool) => {
      const error = await pool.query('SELECT 1').then(() => assert.fail('should fail'), (e: unknown) => e);
      assert.equal((error as { code?: string }).code, 'PGL_ACQUIRE_TIMEOUT');
      assert.equal(((error as Error).cause as { code?: string }).code, 'PGL_NO_MATCHING_HOST');
    });
  });
});
