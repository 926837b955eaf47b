// Issue 12's cases, on pg.Pool and pg-lifeline with the same app code, against a real server:
// work that committed before a deadlock or serialization failure is never run again; an ERROR of
// class 08 on a live session is the app's error, not a lost connection; a slow login is waited
// for; a restart over a unix socket costs no errors.
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import pg from 'pg';
import { ConnectionLostError, Pool } from '../src/index.js';
import { FaultProxy } from './harness/proxy.js';
import { backendPid, implementations, useCluster, withPool } from './parity-shared.js';

const cluster = useCluster();

// Made on first use: the shared cluster's own before hook may not have run before a hook of this file.
let schema: Promise<unknown> | undefined;
const setUp = (): Promise<unknown> =>
  (schema ??= cluster().query(`
    CREATE TABLE audit (id serial PRIMARY KEY, tag text NOT NULL);
    CREATE FUNCTION raise_state(state text) RETURNS int LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'raised %', state USING ERRCODE = state; END $$;
    CREATE PROCEDURE batch(tag text, state text) LANGUAGE plpgsql AS $$
      BEGIN INSERT INTO audit (tag) VALUES (tag); COMMIT; PERFORM raise_state(state); END $$;
    CREATE EXTENSION IF NOT EXISTS dblink;`));

const audits = async (tag: string): Promise<number> =>
  Number((await cluster().query<{ n: string }>('SELECT count(*) AS n FROM audit WHERE tag = $1', [tag]))[0]?.n);

const failure = (promise: Promise<unknown>): Promise<{ code?: string; sqlState?: string } | undefined> =>
  promise.then(() => undefined, (error: { code?: string; sqlState?: string }) => error);

let seq = 0;

for (const impl of implementations) {
  describe(impl.name, () => {
    beforeEach(() => setUp());
    for (const state of ['40P01', '40001']) {
      const forms: [string, (tag: string) => [string | pg.QueryConfig, unknown[]?]][] = [
        ['CALL over the simple protocol', (tag) => [`CALL batch('${tag}', '${state}')`]],
        ['CALL over the extended protocol', (tag) => [{ text: 'CALL batch($1, $2)', values: [tag, state] }]],
        ['a script holding COMMIT', (tag) => [`INSERT INTO audit (tag) VALUES ('${tag}'); COMMIT; SELECT raise_state('${state}')`]],
      ];
      for (const [form, make] of forms) {
        test(`${state} after work that committed (${form}): rejected as pg does, applied once`, () =>
          withPool(impl, {}, async (pool) => {
            const tag = `${state}-${++seq}`;
            const [text, values] = make(tag);
            const error = await failure(pool.query(text as string, values));
            assert.ok(error, 'the statement must fail');
            assert.equal(error.code, state);
            assert.equal(await audits(tag), 1, 'the committed part exists exactly once');
          }));
      }
    }

    test('08P01 for a wrong number of bind parameters is an ordinary error: the session stays, nothing is retried', () =>
      withPool(impl, { idempotent: true } as never, async (pool) => {
        const pid = await backendPid(pool);
        const error = await failure(pool.query('SELECT $1::int AS a, $2::int AS b', [10]));
        assert.equal(error?.code, '08P01');
        assert.ok(!(error instanceof ConnectionLostError), 'not a lost connection: it did not run');
        // pg.Pool destroys the client after any failed pool.query; pg-lifeline keeps a healthy session.
        if (pool instanceof Pool) {
          assert.equal(pool.stats().retries, 0);
          assert.equal(await backendPid(pool), pid, 'the same healthy session serves the next query');
        }
      }));

    test('08001 from dblink failing to reach a remote server is the app’s error, on a live session', () =>
      withPool(impl, {}, async (pool) => {
        const error = await failure(pool.query("SELECT dblink_connect('host=127.0.0.1 port=1 connect_timeout=2')"));
        assert.equal(error?.code, '08001');
        assert.ok(!(error instanceof ConnectionLostError));
        assert.deepEqual((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      }));

    // 300 ms each way makes a TLS + SCRAM login take several seconds: longer than a third of
    // connectionTimeoutMillis (the bound for an attempt with no answer), well within all of it.
    test('a login slower than a third of connectionTimeoutMillis still connects', async () => {
      const proxy = await FaultProxy.start(cluster().clientConfig());
      proxy.latency(300);
      const pool = impl.make({ ...cluster().clientConfig(), host: proxy.host, port: proxy.port, connectionTimeoutMillis: 8000 });
      try {
        assert.deepEqual((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      } finally {
        await pool.end();
        await proxy.close();
      }
    });

    test('a fast restart over a unix socket', () =>
      withPool(impl, { host: cluster().dataDir, ssl: false, max: 2 }, async (pool) => {
        pool.on('error', () => undefined);
        assert.deepEqual((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
        await cluster().restart('fast');
        const outcome = await failure(pool.query({ text: 'SELECT 2 AS two', idempotent: true } as never));
        // pg.Pool hands out the connection the restart ended; pg-lifeline waits out the missing socket file.
        if (impl.name === 'pg-lifeline') assert.equal(outcome, undefined, String(outcome));
        assert.deepEqual((await pool.query('SELECT 3 AS three')).rows, [{ three: 3 }]);
      }));
  });
}
