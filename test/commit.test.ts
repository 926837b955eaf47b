// pool.transaction: retry of transactions that certainly did not commit, and COMMIT outcome
// resolution when the connection dies during COMMIT.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CommitOutcomeUnknownError, ConnectionLostError, Pool, isOutcomeUnknown, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';
import { SLOW_COMMIT_SCHEMA } from './harness/slow-commit.js';

let cluster: PgCluster;
let counter = 0;
before(async () => {
  cluster = await PgCluster.start();
  // COMMIT is slow for 'slow…' rows, so a fault can land while it runs.
  await cluster.query(SLOW_COMMIT_SCHEMA);
});
after(() => cluster.destroy());

function makePool(options: PoolOptions = {}): { pool: Pool; app: string } {
  const app = `commit-${process.pid}-${++counter}`;
  return { pool: new Pool({ ...cluster.clientConfig(), application_name: app, ...options }), app };
}

async function copies(id: number): Promise<number> {
  return (await cluster.query('SELECT 1 FROM entries WHERE id = $1', [id])).length;
}

/** Waits until a backend of `app` is running COMMIT. */
function committing(app: string): Promise<boolean> {
  return waitFor('COMMIT to be running', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query = 'COMMIT'`, [app])).length === 1);
}

describe('transaction retry', () => {
  test('a serialization failure reruns the transaction, which then commits once', async () => {
    const { pool } = makePool();
    let runs = 0;
    try {
      const value = await pool.transaction(
        async (client) => {
          runs++;
          await client.query('INSERT INTO entries VALUES (1, $1)', ['serial']);
          if (runs === 1) await client.query(`DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$`);
          return 'done';
        },
        { retry: true, isolationLevel: 'serializable' },
      );
      assert.equal(value, 'done');
      assert.equal(runs, 2);
      assert.equal(await copies(1), 1);
      assert.equal(pool.stats().retriesByKind.serialization, 1);
    } finally {
      await pool.end();
    }
  });

  test('without retry, the failure reaches the caller and nothing is saved', async () => {
    const { pool } = makePool();
    try {
      await assert.rejects(
        pool.transaction(async (client) => {
          await client.query('INSERT INTO entries VALUES (2, $1)', ['x']);
          await client.query(`DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$`);
        }),
        { code: '40001' },
      );
      assert.equal(await copies(2), 0);
    } finally {
      await pool.end();
    }
  });

  test('a connection killed before COMMIT: a definite, typed failure, or a clean rerun with retry', async () => {
    for (const retry of [false, true]) {
      const { pool, app } = makePool();
      const id = retry ? 4 : 3;
      let runs = 0;
      try {
        const outcome = pool
          .transaction(
            async (client) => {
              runs++;
              await client.query('INSERT INTO entries VALUES ($1, $2)', [id, 'killed']);
              if (runs === 1) await client.query('SELECT pg_sleep(5)');
            },
            { retry },
          )
          .then(() => 'committed', (e: unknown) => e);
        await waitFor('the sleep to run', async () => (await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND query LIKE '%pg_sleep%' AND state = 'active'`, [app])).length === 1);
        await cluster.terminateBackends(app);
        const result = await outcome;
        if (retry) {
          assert.equal(result, 'committed');
          assert.equal(await copies(id), 1);
        } else {
          assert.ok(result instanceof ConnectionLostError, String(result));
          assert.equal(result.outcome, 'not-applied');
          assert.equal(isOutcomeUnknown(result), false);
          assert.equal(await copies(id), 0);
        }
      } finally {
        await pool.end();
      }
    }
  });
});

describe('COMMIT outcome resolution', () => {
  test('killed during COMMIT: the pool learns it aborted, reruns it, and it lands exactly once', async () => {
    const { pool, app } = makePool();
    try {
      const outcome = pool.transaction((client) => client.query('INSERT INTO entries VALUES (10, $1)', ['slow-aborted']).then(() => 'saved'), { retry: true });
      await committing(app);
      await cluster.terminateBackends(app);
      assert.equal(await outcome, 'saved');
      assert.equal(await copies(10), 1);
      assert.equal(pool.stats().commitResolutions.aborted, 1);
    } finally {
      await pool.end();
    }
  });

  test('committed but the answer lost: the pool learns it committed and reports success', async () => {
    // COMMIT with synchronous replication to a standby that does not exist commits locally, then
    // waits; the statement deadline gives up on it while the transaction is already durable.
    await cluster.setSetting('synchronous_standby_names', 'nobody');
    const { pool } = makePool({ query_timeout: 300 });
    try {
      const value = await pool.transaction(async (client) => {
        await client.query('SET LOCAL synchronous_commit = on');
        await client.query('INSERT INTO entries VALUES (11, $1)', ['durable']);
        return 'saved';
      });
      assert.equal(value, 'saved');
      assert.equal(await copies(11), 1);
      assert.equal(pool.stats().commitResolutions.committed, 1);
    } finally {
      await pool.end();
      await cluster.resetSetting('synchronous_standby_names');
    }
  });

  test('server unreachable after a lost COMMIT: CommitOutcomeUnknownError with the xid', async () => {
    const proxy = await FaultProxy.start(cluster.clientConfig());
    const { pool, app } = makePool({ host: proxy.host, port: proxy.port, connectionTimeoutMillis: 500 });
    try {
      const outcome = pool.transaction((client) => client.query('INSERT INTO entries VALUES (12, $1)', ['slow-unknown'])).then(() => 'saved', (e: unknown) => e);
      await committing(app);
      await proxy.refuse();
      proxy.resetAll();
      const error = await outcome;
      assert.ok(error instanceof CommitOutcomeUnknownError, String(error));
      assert.match(error.xid ?? '', /^\d+$/);
      assert.ok(isOutcomeUnknown(error));
      assert.equal(pool.stats().commitResolutions.unknown, 1);
    } finally {
      await pool.end();
      await proxy.close();
    }
  });

  test('resolveOutcome: a plain write whose COMMIT was cut off still lands exactly once', async () => {
    const { pool, app } = makePool();
    try {
      const write = pool.query({ text: 'INSERT INTO entries VALUES (13, $1)', values: ['slow-plain'], resolveOutcome: true });
      await committing(app);
      await cluster.terminateBackends(app);
      assert.equal((await write).rowCount, 1);
      assert.equal(await copies(13), 1);
      assert.equal(pool.stats().commitResolutions.aborted, 1);
    } finally {
      await pool.end();
    }
  });

  test('resolveCommitOutcome: false skips the tracking; a lost COMMIT is then reported as unknown', async () => {
    const { pool, app } = makePool({ resolveCommitOutcome: false });
    try {
      const outcome = pool.transaction((client) => client.query('INSERT INTO entries VALUES (14, $1)', ['slow-untracked'])).then(() => 'saved', (e: unknown) => e);
      await committing(app);
      await cluster.terminateBackends(app);
      const error = await outcome;
      assert.ok(error instanceof CommitOutcomeUnknownError, String(error));
      assert.equal(error.xid, undefined);
    } finally {
      await pool.end();
    }
  });
});
