// Session state a failed pool.query leaves behind (issue 11, item 9), on pg.Pool and pg-lifeline
// with the same app code. pg.Pool heals by destroying the client after any failed pool.query;
// pg-lifeline keeps connections after ordinary SQL errors, so it must recognise the failures that
// leave a session stale and retire those connections. Each case may fail once; it must not fail again.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { backendPid, implementations, useCluster, withPool } from './parity-shared.js';
import { waitFor } from './harness/wait.js';

const cluster = useCluster();
let table = 0;

const failure = (promise: Promise<unknown>): Promise<{ code?: string } | undefined> =>
  promise.then(() => undefined, (error: { code?: string }) => error);

for (const impl of implementations) {
  describe(impl.name, () => {
    test('a named statement after ALTER TABLE … ADD COLUMN fails at most once, then works', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const name = `t_alter_${process.pid}_${++table}`;
        await pool.query(`CREATE TABLE ${name} (id int)`);
        await pool.query(`INSERT INTO ${name} VALUES (1)`);
        const select = { name: `select_${name}`, text: `SELECT * FROM ${name}` };
        assert.deepEqual((await pool.query(select)).rows, [{ id: 1 }]);
        await pool.query(`ALTER TABLE ${name} ADD COLUMN extra int`);
        const first = await failure(pool.query(select));
        if (first) assert.equal(first.code, '0A000');
        assert.deepEqual((await pool.query(select)).rows, [{ id: 1, extra: null }]);
        assert.deepEqual((await pool.query(select)).rows, [{ id: 1, extra: null }]);
      }));

    for (const reset of ['DEALLOCATE ALL', 'DISCARD ALL']) {
      test(`a named statement after ${reset} fails at most once, then works`, () =>
        withPool(impl, { max: 1 }, async (pool) => {
          const named = { name: `answer_${reset.replace(' ', '_')}`, text: 'SELECT 42 AS n' };
          assert.deepEqual((await pool.query(named)).rows, [{ n: 42 }]);
          await pool.query(reset);
          const first = await failure(pool.query(named));
          assert.equal(first?.code, '26000', 'pg still believes the statement is prepared');
          assert.deepEqual((await pool.query(named)).rows, [{ n: 42 }]);
          assert.deepEqual((await pool.query(named)).rows, [{ n: 42 }]);
        }));
    }

    // idleTimeoutMillis 0: no idle close frees the lock by the way; only retiring the session does.
    test('a script that takes a session advisory lock and then fails leaves no lock behind', () =>
      withPool(impl, { max: 1, idleTimeoutMillis: 0 }, async (pool) => {
        const key = 700_000 + (++table);
        const error = await failure(pool.query(`SELECT pg_advisory_lock(${key}); SELECT 1/0`));
        assert.equal(error?.code, '22012');
        // Another session can take the lock once the pool has let go of the one that held it.
        await waitFor('the lock to be free', async () => (await cluster().query(`SELECT pg_try_advisory_lock(${key}) AS ok`))[0]?.ok === true);
        await cluster().query(`SELECT pg_advisory_unlock_all()`);
        assert.deepEqual((await pool.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
      }));

    test('an ordinary SQL error keeps the session on pg-lifeline, and a script error retires it', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const before = await backendPid(pool);
        assert.equal((await failure(pool.query('SELECT 1/0')))?.code, '22012');
        const afterSimple = await backendPid(pool);
        // pg.Pool destroys the client after any failed pool.query; pg-lifeline keeps a healthy session.
        if (impl.name === 'pg.Pool') assert.notEqual(afterSimple, before);
        else assert.equal(afterSimple, before);
        assert.equal((await failure(pool.query('SET application_name = x; SELECT 1/0')))?.code, '22012');
        assert.notEqual(await backendPid(pool), afterSimple, 'the script may have changed the session');
      }));
  });
}
