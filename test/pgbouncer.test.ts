// pg-lifeline's Pool connected through PgBouncer, in transaction and in session pooling: ordinary
// work, checkout probes, server backends killed, PgBouncer restarted, a COMMIT cut off, lifetimes,
// and proof from the server's own log that the pool sends nothing transaction pooling rules out.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConnectFailedError, Pool, QueryTimeoutError, type EvictionEvent, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { Bouncer, pgbouncerBinary } from './harness/pgbouncer.js';
import { waitFor } from './harness/wait.js';
import { SLOW_COMMIT_SCHEMA } from './harness/slow-commit.js';

const noBouncer = !pgbouncerBinary() && 'pgbouncer is not installed (.ci/run installs it)';
const MODES = ['transaction', 'session'] as const;

let cluster: PgCluster;
let counter = 0;
before(async () => {
  cluster = await PgCluster.start();
  // COMMIT is slow for 'slow…' rows, so a fault can land while it runs.
  await cluster.query(SLOW_COMMIT_SCHEMA);
});
after(() => cluster?.destroy());

async function copies(id: number): Promise<number> {
  return (await cluster.query('SELECT 1 FROM entries WHERE id = $1', [id])).length;
}

/** Evictions of `pool`, recorded with the error the client saw, from the start. */
function recordEvictions(pool: Pool): string[] {
  const seen: string[] = [];
  pool.on('evict', ({ reason, error }: EvictionEvent) => {
    const e = error as { code?: string; message?: string } | undefined;
    seen.push(`${reason}: ${e?.code ?? '-'} ${e?.message ?? ''}`.trim());
  });
  return seen;
}

/**
 * Opens `n` connections at once and runs a statement on each (PgBouncer links a client to a server
 * connection only at its first statement), then returns them all.
 */
async function warm(pool: Pool, n: number): Promise<void> {
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()));
  await Promise.all(clients.map((client) => client.query('SELECT 1')));
  for (const client of clients) client.release();
}

/** Runs `n` parameterized queries at once and checks every answer. */
async function queryAll(pool: Pool, n: number): Promise<void> {
  const results = await Promise.all(Array.from({ length: n }, (_, i) => pool.query('SELECT $1::int AS i', [i])));
  assert.deepEqual(results.map((r) => r.rows[0]?.i), Array.from({ length: n }, (_, i) => i));
}

/** Server backends (PgBouncer's server connections) other than the harness's own. */
function serverPids(): Promise<number[]> {
  return cluster.backendPids();
}

for (const mode of MODES) {
  describe(`through PgBouncer in ${mode} pooling`, { skip: noBouncer, timeout: 60_000 }, () => {
    let bouncer: Bouncer;
    // 10 server connections: more than any pool here opens, so session pooling never queues a client.
    before(async () => {
      bouncer = await Bouncer.start(cluster, { poolMode: mode, defaultPoolSize: 10 });
    });
    after(() => bouncer?.destroy());

    function makePool(options: PoolOptions = {}): { pool: Pool; app: string } {
      const app = `pgbouncer-${mode}-${process.pid}-${++counter}`;
      return { pool: new Pool({ ...bouncer.clientConfig(), application_name: app, ...options }), app };
    }

    test('plain and parameterized queries, transaction commit and rollback, withClient', async () => {
      const { pool } = makePool({ max: 3 });
      const base = mode === 'transaction' ? 100 : 200;
      try {
        assert.equal((await pool.query('SELECT 1 AS one')).rows[0]?.one, 1);
        // pg sends parameters through the unnamed prepared statement, which is per-transaction safe.
        const { rows } = await pool.query('SELECT $1::int + $2::int AS sum, $3::text AS t', [2, 3, 'x']);
        assert.deepEqual(rows, [{ sum: 5, t: 'x' }]);
        assert.equal(await pool.transaction(async (client) => (await client.query('INSERT INTO entries VALUES ($1, $2)', [base + 1, 'kept'])).rowCount), 1);
        assert.equal(await copies(base + 1), 1);
        await assert.rejects(
          pool.transaction(async (client) => {
            await client.query('INSERT INTO entries VALUES ($1, $2)', [base + 2, 'rolled back']);
            throw new Error('changed my mind');
          }),
          /changed my mind/,
        );
        assert.equal(await copies(base + 2), 0);
        const seen = await pool.withClient(async (client) => {
          await client.query('INSERT INTO entries VALUES ($1, $2)', [base + 3, 'autocommit']);
          return (await client.query('SELECT body FROM entries WHERE id = $1', [base + 3])).rows[0].body;
        });
        assert.equal(seen, 'autocommit');
        // A SQL error inside withClient costs nothing: the same pool keeps working.
        await assert.rejects(pool.withClient((client) => client.query('SELEC 1')), { code: '42601' });
        await queryAll(pool, 6);
        assert.equal(pool.stats().evictions.died, 0);
      } finally {
        await pool.end();
      }
    });

    test('validationWindowMillis: 0 probes every checkout through the bouncer, and every probe passes', async () => {
      const { pool } = makePool({ max: 2, validationWindowMillis: 0 });
      try {
        await warm(pool, 2);
        for (let i = 0; i < 10; i++) assert.equal((await pool.query('SELECT $1::int AS i', [i])).rows[0]?.i, i);
        const stats = pool.stats();
        assert.ok(stats.validations >= 10, `validations: ${stats.validations}`);
        assert.equal(stats.failedValidations, 0);
        assert.equal(stats.evictions['failed-check'], 0);
      } finally {
        await pool.end();
      }
    });

    test('server backends killed while the pool is idle: the next queries succeed, zero errors', async (t) => {
      const { pool } = makePool({ max: 4 });
      const evictions = recordEvictions(pool);
      try {
        await warm(pool, 4);
        const old = await serverPids();
        const killed = await cluster.terminateBackends();
        assert.ok(killed >= 1, 'PgBouncer had server connections to kill');
        if (mode === 'session') {
          // Each client connection is tied to its server connection: PgBouncer passes the
          // server's FATAL on and closes the client. The pool drops all four on its own.
          await waitFor('the pool to drop the dead connections', () => pool.stats().evictions.died === 4);
          assert.ok(evictions.every((e) => e.startsWith('died: 57P01')), evictions.join('\n'));
        }
        await queryAll(pool, 8);
        if (mode === 'transaction') {
          // Idle clients hold no server connection: the client side sees nothing at all, and
          // PgBouncer opens new server connections by itself.
          assert.deepEqual(evictions, []);
          assert.equal(pool.stats().invalidations, 0);
        }
        const now = await serverPids();
        assert.ok(now.length > 0 && now.every((pid) => !old.includes(pid)), 'PgBouncer reconnected to the server');
        t.diagnostic(`${mode}: killed ${killed} server backend(s); the client saw ${evictions.length ? evictions.join(' | ') : 'nothing'}`);
      } finally {
        await pool.end();
      }
    });

    test('PgBouncer restarted while the pool is idle: the pool drops its dead connections, zero errors', async (t) => {
      const { pool } = makePool({ max: 3 });
      const evictions = recordEvictions(pool);
      try {
        await warm(pool, 3);
        await bouncer.restart();
        await waitFor('the pool to drop the dead connections', () => pool.stats().evictions.died === 3);
        assert.equal(pool.totalCount, 0);
        await queryAll(pool, 6);
        assert.equal(await pool.transaction(async (client) => (await client.query('SELECT 7 AS n')).rows[0].n), 7);
        t.diagnostic(`${mode}: after a PgBouncer restart the client saw ${evictions.join(' | ')}`);
      } finally {
        await pool.end();
      }
    });

    test('killed during COMMIT: resolved as aborted, rerun with retry, and the row lands exactly once', async () => {
      const { pool } = makePool({ max: 2 });
      const id = mode === 'transaction' ? 110 : 210;
      let runs = 0;
      try {
        const outcome = pool.transaction(
          async (client) => {
            runs++;
            await client.query('INSERT INTO entries VALUES ($1, $2)', [id, 'slow-commit']);
            return 'saved';
          },
          { retry: true },
        );
        // application_name is whatever PgBouncer last set on the server connection: match on the
        // statement itself.
        const pid = await waitFor('COMMIT to be running', async () => {
          const rows = await cluster.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND state = 'active' AND query = 'COMMIT'`);
          return rows.length === 1 ? rows[0]?.pid : undefined;
        });
        await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
        assert.equal(await outcome, 'saved');
        assert.equal(runs, 2);
        assert.equal(await copies(id), 1);
        const stats = pool.stats();
        assert.deepEqual(stats.commitResolutions, { committed: 0, aborted: 1, unknown: 0 });
        assert.equal(stats.retries, 1);
      } finally {
        await pool.end();
      }
    });

    test('lifetimes: connections retire and are replaced while queries keep working', async () => {
      const { pool } = makePool({ min: 2, max: 4, maxLifetimeSeconds: 0.3, maxLifetimeJitter: 0 });
      const failures: unknown[] = [];
      let ok = 0;
      try {
        await waitFor(
          'two rounds of connections to retire',
          async () => {
            await pool.query('SELECT 1 AS one').then(() => ok++, (e: unknown) => failures.push(e));
            return pool.stats().evictions.lifetime >= 4 || failures.length > 0;
          },
          { timeoutMs: 15_000 },
        );
        assert.deepEqual(failures, []);
        assert.ok(ok > 0);
        await waitFor('min connections to be open again', () => pool.stats().idle >= 2);
        assert.ok(pool.stats().connects >= 6, `connects: ${pool.stats().connects}`);
        await queryAll(pool, 4);
        assert.equal(pool.stats().evictions.died, 0);
      } finally {
        await pool.end();
      }
    });

    test('pg-lifeline sends no SET, LISTEN, session advisory lock or named prepared statement', async () => {
      const log = path.join(cluster.dataDir, 'server.log');
      await cluster.setSetting('log_statement', 'all');
      const { pool, app } = makePool({ max: 2, validationWindowMillis: 0, query_timeout: 10_000 });
      const control = `control_${process.pid}_${counter}`;
      try {
        const start = (await readFile(log)).length;
        await pool.query('SELECT 1');
        await pool.query('SELECT $1::int AS n', [1]);
        await pool.transaction((client) => client.query('INSERT INTO entries VALUES ($1, $2)', [mode === 'transaction' ? 120 : 220, 'logged']));
        await pool.transaction((client) => client.query('SELECT 1'), { retry: true, isolationLevel: 'repeatable read' });
        await pool.query({ text: 'INSERT INTO entries VALUES ($1, $2)', values: [mode === 'transaction' ? 121 : 221, 'resolved'], resolveOutcome: true });
        await pool.withClient((client) => client.query('SELECT 2'));
        // A client released inside a transaction: the pool rolls it back on its own.
        const dirty = await pool.connect();
        await dirty.query('BEGIN');
        dirty.release();
        await pool.query('SELECT 3');
        // The control: this test itself runs one named prepared statement; the scan must find it.
        await pool.query({ name: control, text: 'SELECT 4' });
        await pool.end();
        const sentinel = `sentinel_${process.pid}_${counter}`;
        await cluster.query(`SELECT '${sentinel}'`);
        const text = await waitFor('the log to be written', async () => {
          const all = (await readFile(log)).subarray(start).toString('utf8');
          return all.includes(sentinel) ? all : undefined;
        });
        const statements = [...text.matchAll(/LOG: {2}(statement|execute ([^:]+)): ?(.*)$/gm)].map((m) => ({ name: m[2], sql: m[3] ?? '' }));
        // PgBouncer forwards the startup parameter application_name as a SET of its own.
        const fromBouncer = (sql: string): boolean => sql === `SET application_name='${app}';`;
        const forbidden = statements
          .filter(({ name, sql }) => {
            if (name !== undefined && name !== '<unnamed>') return true;
            if (fromBouncer(sql)) return false;
            return /^\s*(SET(?!\s+LOCAL\b)|RESET|LISTEN|UNLISTEN|PREPARE|DEALLOCATE)\b/i.test(sql) || /pg_(try_)?advisory_(un)?lock(_shared)?\s*\(/i.test(sql);
          })
          .map(({ name, sql }) => (name === undefined ? sql : `execute ${name}: ${sql}`));
        assert.deepEqual(forbidden, [`execute ${control}: SELECT 4`]);
        // Not vacuous: the pool's own statements are in the log.
        const own = statements.map((s) => s.sql);
        assert.ok(own.includes(''), 'the checkout probes (empty queries) were logged');
        assert.ok(own.some((sql) => sql.includes('pg_current_xact_id_if_assigned()')), 'the COMMIT ticket was logged');
        assert.ok(own.includes('ROLLBACK'), 'the release rollback was logged');
      } finally {
        if (!pool.ending) await pool.end();
        await cluster.resetSetting('log_statement');
      }
    });
  });
}

// Two things PgBouncer does differently from a server, each of which once broke pg-lifeline.
describe('where PgBouncer differs from a server', { skip: noBouncer, timeout: 30_000 }, () => {
  // PgBouncer reports its own login refusals as 08P01, which also reads as a lost connection: an
  // unknown database must still fail at once, not be retried until the deadline.
  test('an unknown database fails at once with ConnectFailedError', async () => {
    const bouncer = await Bouncer.start(cluster, { poolMode: 'transaction' });
    const pool = new Pool({ ...bouncer.clientConfig(), database: 'no_such_database', connectionTimeoutMillis: 1_000 });
    try {
      await assert.rejects(pool.query('SELECT 1'), ConnectFailedError);
    } finally {
      await pool.end();
      await bouncer.destroy();
    }
  });

  // Closing the cancel connection, or the client's, before PgBouncer has passed the cancel on makes
  // it drop the cancel ("failed cancel request"), so the statement runs on; 1.18 can even exit on
  // the early close (FATAL disconnect_client(): bad client state: 0).
  test('a statement past query_timeout is canceled on the server, and PgBouncer survives', async () => {
    const bouncer = await Bouncer.start(cluster, { poolMode: 'transaction' });
    const pool = new Pool({ ...bouncer.clientConfig(), application_name: `pgbouncer-timeout-${process.pid}`, query_timeout: 200 });
    try {
      const error = await pool.query('SELECT pg_sleep(30), 1 AS timeout_probe').then(() => assert.fail('should time out'), (e: unknown) => e);
      assert.ok(error instanceof QueryTimeoutError, String(error));
      const running = async (): Promise<number> => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%timeout_probe%' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`)).length;
      await waitFor('the statement to stop on the server', async () => (await running()) === 0, { timeoutMs: 3_000 });
      assert.equal((await pool.query('SELECT 1 AS ok')).rows[0]?.ok, 1);
    } finally {
      await pool.end();
      await bouncer.destroy();
      await cluster.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%timeout_probe%' AND pid <> pg_backend_pid()`);
    }
  });
});
