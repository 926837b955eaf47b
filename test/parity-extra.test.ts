// Parity, continued from parity.test.ts (same layout and helpers): submittables, dying backends,
// behaviours that need a child process, the onConnect and Client options, and transactions.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import QueryStream from 'pg-query-stream';
import { waitFor } from './harness/wait.js';
import { backendPid, bounded, implementations, nextEvent, pid, useCluster, withPool, type Impl, type Options } from './parity-shared.js';

// pg-cursor ships no types; a non-literal specifier keeps tsc from looking for them.
interface CursorLike extends pg.Submittable {
  read(rows: number): Promise<Array<{ x: number }>>;
  close(): Promise<void>;
}
const { default: Cursor } = (await import('pg-cursor' as string)) as { default: new (text: string) => CursorLike };

const cluster = useCluster();
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
let scriptDir: string;
let seq = 0;

before(async () => {
  scriptDir = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-parity-'));
});
after(async () => {
  if (scriptDir) await rm(scriptDir, { recursive: true, force: true });
});

/**
 * Runs `body` in a child node process with a pool of `impl` (an uncaught error there must not take
 * this test run down). It prints `ready` once it wants `onReady` (run here) to act on it.
 */
async function runChild(impl: Impl, options: Options, body: string, onReady?: () => Promise<unknown>) {
  const file = path.join(scriptDir, `child-${++seq}.mts`);
  await writeFile(
    file,
    `import pg from ${JSON.stringify(import.meta.resolve('pg'))};
import { Pool } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)};
const options = JSON.parse(process.env.PARITY_OPTIONS!);
const pool = process.env.PARITY_IMPL === 'pg.Pool' ? new pg.Pool(options) : new Pool(options);
${body}`,
  );
  const env: NodeJS.ProcessEnv = { ...process.env, PARITY_IMPL: impl, PARITY_OPTIONS: JSON.stringify({ ...cluster().clientConfig(), ...options }) };
  delete env['NODE_TEST_CONTEXT'];
  const child = spawn(process.execPath, ['--import', 'tsx', file], { cwd: repoRoot, env, timeout: 20_000, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let readyWork: Promise<unknown> = Promise.resolve();
  child.stdout.on('data', (chunk: Buffer) => {
    const wasReady = stdout.includes('ready\n');
    stdout += chunk.toString();
    if (!wasReady && stdout.includes('ready\n') && onReady) {
      readyWork = onReady();
      readyWork.catch(() => undefined); // awaited below, after the child exits
    }
  });
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  return { code, signal, stdout, stderr, ready: await readyWork };
}

for (const impl of implementations) {
  const isPg = impl.name === 'pg.Pool';
  describe(impl.name, { timeout: 30_000 }, () => {
    test('query(fn) whose return value is ignored does not crash the process', async () => {
      const child = await runChild(impl.name, {}, "pool.query((err: Error) => console.log('callback', err instanceof Error));");
      assert.equal(child.code, 0, child.stderr);
      assert.match(child.stdout, /callback true/);
    });

    test('pg-cursor and pg-query-stream through a checked-out client', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const client = await pool.connect();
        const p = pid(client);
        try {
          const cursor = client.query(new Cursor('SELECT generate_series(1, 10) AS x'));
          assert.deepEqual((await cursor.read(4)).map((r) => r.x), [1, 2, 3, 4]);
          assert.deepEqual((await cursor.read(4)).map((r) => r.x), [5, 6, 7, 8]);
          await cursor.close(); // portal still open: two rows left unread
        } finally {
          client.release();
        }
        const again = await pool.connect();
        try {
          assert.equal(pid(again), p);
          const xs: number[] = [];
          for await (const row of again.query(new QueryStream('SELECT generate_series(1, 100) AS x'))) xs.push((row as { x: number }).x);
          assert.equal(xs.length, 100);
          assert.equal(xs[99], 100);
        } finally {
          again.release();
        }
        assert.equal(await backendPid(pool), p);
      }));

    test('pool.query(QueryStream) streams the rows and gives the client back', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const stream = new QueryStream('SELECT generate_series(1, 100) AS x');
        const returned: unknown = pool.query(stream);
        let rows = 0;
        for await (const _row of stream) rows++;
        assert.equal(rows, 100);
        if (isPg) {
          // pg 8.23 hands pool.query's callback to the submittable, so pg.Pool no longer leaks the client here;
          // it returns a promise that settles when the stream ends.
          assert.ok(returned instanceof Promise);
          await bounded(returned, 'pool.query(stream) promise');
        } else {
          // deliberate difference: pg-lifeline returns the submittable itself, as @types/pg declares.
          assert.equal(returned, stream);
        }
        await waitFor('the client to come back', () => pool.idleCount === 1 && pool.totalCount === 1);
        assert.deepEqual((await pool.query('SELECT 1 AS ok')).rows, [{ ok: 1 }]);
      }));

    test('an idle client whose backend is killed: error event, removal, next query works', () =>
      withPool(impl, {}, async (pool, app) => {
        const errors: Error[] = [];
        pool.on('error', (e: Error) => errors.push(e));
        const before = await backendPid(pool);
        const removed = nextEvent(pool, 'remove');
        assert.equal(await cluster().terminateBackends(app), 1);
        assert.equal(pid((await removed)[0]), before);
        assert.equal(errors.length, 1);
        assert.equal((errors[0] as Error & { code?: string }).code, '57P01');
        assert.equal(pool.totalCount, 0);
        assert.notEqual(await backendPid(pool), before);
      }));

    test('an idle client dying with no error listener', async () => {
      const app = `parity-child-${++seq}`;
      const body = `await pool.query('SELECT 1');
console.log('ready');
await new Promise((resolve) => pool.once('remove', resolve));
console.log('survived');
await pool.end();`;
      const child = await runChild(impl.name, { application_name: app }, body, () => cluster().terminateBackends(app));
      assert.equal(child.ready, 1); // one backend killed
      if (isPg) {
        assert.notEqual(child.code, 0);
        assert.match(child.stderr, /terminating connection due to administrator command/);
        assert.doesNotMatch(child.stdout, /survived/);
      } else {
        // deliberate difference: without an 'error' listener pg-lifeline does not crash the process.
        assert.equal(child.code, 0, child.stderr);
        assert.match(child.stdout, /survived/);
      }
    });

    test('onConnect runs once per new client, before it is used', () => {
      const hooked: number[] = [];
      const onConnect = async (client: pg.ClientBase) => {
        hooked.push(pid(client));
        await client.query('SET search_path TO parity_schema, public');
      };
      return withPool(impl, { max: 2, onConnect }, async (pool) => {
        const sql = "SELECT pg_backend_pid() AS pid, current_setting('search_path') AS path, pg_sleep(0.02)";
        const results = await Promise.all([1, 2, 3, 4].map(() => pool.query<{ pid: number; path: string }>(sql)));
        assert.ok(results.every((r) => r.rows[0]!.path === 'parity_schema, public'));
        assert.equal(hooked.length, pool.totalCount);
        assert.deepEqual(new Set(results.map((r) => r.rows[0]!.pid)), new Set(hooked));
      });
    });

    test('an onConnect hook that throws fails the checkout and discards the client', () => {
      const hookError = new Error('hook failed');
      const onConnect = () => Promise.reject(hookError);
      return withPool(impl, { onConnect }, async (pool, app) => {
        const err = (await pool.connect().then(
          () => assert.fail('connect() should have failed'),
          (e: unknown) => e,
        )) as Error;
        // The error contract: both pools reject with the very error the hook threw.
        assert.equal(err, hookError);
        assert.equal(pool.totalCount, 0);
        await waitFor('the session to close', async () => (await cluster().backendPids(app)).length === 0);
      });
    });

    test('the Client option: the pool instantiates that class', () => {
      let constructed = 0;
      class MyClient extends pg.Client {
        constructor(config?: string | pg.ClientConfig) {
          super(config);
          constructed++;
        }
      }
      return withPool(impl, { Client: MyClient }, async (pool) => {
        const connected = nextEvent(pool, 'connect');
        const client = await pool.connect();
        try {
          assert.ok(client instanceof MyClient); // pg-lifeline: a Proxy of a MyClient still passes
          assert.ok((await connected)[0] instanceof MyClient);
          assert.equal(constructed, 1);
          assert.deepEqual((await client.query('SELECT 1 AS one')).rows, [{ one: 1 }]);
        } finally {
          client.release();
        }
      });
    });

    test('allowExitOnIdle lets a process that never calls end() exit', async () => {
      // idleTimeoutMillis: 0 keeps idle clients forever, so only allowExitOnIdle can let the child exit.
      const child = await runChild(
        impl.name,
        { allowExitOnIdle: true, idleTimeoutMillis: 0 },
        "const { rows } = await pool.query('SELECT 42 AS answer');\nconsole.log('answer', rows[0].answer);",
      );
      assert.equal(child.signal, null, 'the child had to be killed');
      assert.equal(child.code, 0, child.stderr);
      assert.match(child.stdout, /answer 42/);
    });

    test('a client released inside an open transaction', () =>
      withPool(impl, { max: 1 }, async (pool) => {
        const client = await pool.connect();
        const p = pid(client);
        await client.query('BEGIN');
        await client.query('CREATE TEMP TABLE parity_tx (x int)');
        client.release(); // no COMMIT or ROLLBACK
        const next = await pool.connect();
        try {
          assert.equal(pid(next), p);
          const { rows } = await next.query("SELECT to_regclass('parity_tx') IS NOT NULL AS visible");
          if (isPg) {
            assert.equal(rows[0].visible, true); // the next user inherits the open transaction
            await next.query('ROLLBACK');
          } else {
            // deliberate difference: pg-lifeline rolls an open transaction back on release.
            assert.equal(rows[0].visible, false);
          }
        } finally {
          next.release();
        }
      }));
  });
}
