// pool.end(): leaves nothing running, never hangs on a dead network, and bounds its wait for borrowers.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Pool, PoolEndedError, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { FaultProxy } from './harness/proxy.js';
import { waitFor } from './harness/wait.js';

const srcIndex = fileURLToPath(new URL('../src/index.ts', import.meta.url));
const waitModule = fileURLToPath(new URL('./harness/wait.ts', import.meta.url));

let cluster: PgCluster;
let proxy: FaultProxy | undefined;

before(async () => {
  cluster = await PgCluster.start();
});

after(async () => {
  await proxy?.close();
  await cluster?.destroy();
});

/** A fresh proxy in front of the cluster, closed in after() or by the next call. */
async function freshProxy(): Promise<FaultProxy> {
  await proxy?.close();
  proxy = await FaultProxy.start({ host: cluster.host, port: cluster.port });
  return proxy;
}

let poolSeq = 0;
function newPool(options: PoolOptions): Pool {
  return new Pool({ ...cluster.clientConfig(), application_name: `shutdown-${++poolSeq}`, ...options });
}

/** Rejects if `promise` has not settled within `ms`: a hang must fail the test, not stall the run. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, guard]);
  } finally {
    clearTimeout(timer);
  }
}

describe('pool.end()', () => {
  test('leaves no sockets or timers behind: a child process exits on its own', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-shutdown-'));
    try {
      const script = path.join(dir, 'child.mts');
      await writeFile(
        script,
        `import { Pool } from ${JSON.stringify(pathToFileURL(srcIndex).href)};
import { waitFor } from ${JSON.stringify(pathToFileURL(waitModule).href)};
const pool = new Pool({ ...JSON.parse(process.env.PGL_CONFIG), application_name: 'shutdown-child', min: 2 });
await Promise.all([pool.query('SELECT 1'), pool.query('SELECT pg_sleep(0.05)'), pool.query('SELECT 2')]);
await waitFor('every connection back idle', () => pool.totalCount >= 2 && pool.idleCount === pool.totalCount);
await pool.end();
console.log(JSON.stringify(process.getActiveResourcesInfo()));
`,
      );
      const child = spawn(process.execPath, ['--import', 'tsx', script], {
        cwd: fileURLToPath(new URL('..', import.meta.url)), // so the child finds tsx
        env: { ...process.env, PGL_CONFIG: JSON.stringify(cluster.clientConfig()) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk) => (stdout += chunk));
      child.stderr.on('data', (chunk) => (stderr += chunk));
      const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
      let code: number | null;
      try {
        [code] = await within(20_000, 'the child process', exited);
      } catch (error) {
        // A process kept alive by a leaked socket or timer overruns; kill it by pid and fail.
        if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
        throw new Error(`child did not exit on its own; stdout: ${stdout} stderr: ${stderr}`, { cause: error });
      }
      assert.equal(code, 0, `child failed: ${stderr}`);
      const resources = JSON.parse(stdout.trim().split('\n').at(-1) ?? '[]') as string[];
      assert.ok(Array.isArray(resources));
      assert.ok(!resources.includes('TCPWrap'), `sockets left open: ${JSON.stringify(resources)}`);
      assert.ok(!resources.includes('Timeout'), `timers left running: ${JSON.stringify(resources)}`);
      assert.deepEqual(await cluster.backendPids('shutdown-child'), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('resolves while the network is blackholed', async () => {
    const faults = await freshProxy();
    const pool = newPool({ host: faults.host, port: faults.port, max: 3 });
    try {
      // Warm three connections: hold them all at once, then give them back.
      const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
      for (const client of clients) client.release();
      assert.equal(pool.idleCount, 3);
      let removed = 0;
      pool.on('remove', () => removed++);
      faults.blackhole();
      await within(15_000, 'pool.end() on a blackholed network', pool.end());
      assert.equal(pool.ended, true);
      assert.equal(pool.totalCount, 0);
      // end() resolves only once every connection has closed, answered or not.
      assert.equal(removed, 3);
      assert.equal(pool.stats().evictions['pool-ended'], 3);
    } finally {
      if (!pool.ending) await pool.end();
      faults.passThrough();
    }
  });

  test('resolves with queries and a connect stuck in the blackhole', async () => {
    const faults = await freshProxy();
    const pool = newPool({ host: faults.host, port: faults.port, max: 3, shutdownTimeoutMillis: 300 });
    try {
      const [held, spare] = await Promise.all([pool.connect(), pool.connect()]);
      spare.release();
      faults.blackhole();
      // One query on a checked-out client, one through pool.query, both never answered...
      const onHeld = held.query('SELECT 1').then(() => undefined, (e: unknown) => e);
      const viaPool = pool.query('SELECT 2').then(() => undefined, (e: unknown) => e);
      // ...and one caller waiting on a connect whose startup packet is swallowed.
      const waiting = pool.connect().then(
        (client) => client.release(),
        (e: unknown) => e,
      );
      // The waiter has a connection opening for it, so (as in pg.Pool) waitingCount leaves it out.
      await waitFor('a third connection to be opening', () => pool.totalCount === 3 && pool.stats().waiting === 1);
      await within(15_000, 'pool.end() with work stuck in a blackhole', pool.end());
      assert.equal(pool.totalCount, 0);
      assert.ok((await waiting) instanceof PoolEndedError);
      assert.ok((await onHeld) instanceof Error);
      assert.ok((await viaPool) instanceof Error);
      assert.ok(pool.stats().evictions['shutdown-timeout'] >= 1);
    } finally {
      if (!pool.ending) await pool.end();
      faults.passThrough();
    }
  });

  test('cuts a client that is never released once shutdownTimeoutMillis passes', async () => {
    const pool = newPool({ shutdownTimeoutMillis: 200 });
    const app = pool.options.application_name ?? '';
    const client = await pool.connect();
    await pool.end();
    assert.equal(pool.stats().evictions['shutdown-timeout'], 1);
    assert.equal(pool.totalCount, 0);
    await assert.rejects(client.query('SELECT 1'));
    // A late release must not throw or resurrect anything.
    client.release();
    assert.equal(pool.totalCount, 0);
    await waitFor('the cut backend to go away', async () => (await cluster.backendPids(app)).length === 0);
  });

  test('waits for a client released within shutdownTimeoutMillis', async () => {
    const pool = newPool({ shutdownTimeoutMillis: 10_000 });
    const client = await pool.connect();
    await client.query('SELECT 1');
    let ended = false;
    const ending = pool.end().then(() => (ended = true));
    assert.equal(pool.ending, true);
    // Still running queries during the grace period is allowed.
    assert.equal((await client.query('SELECT 7 AS n')).rows[0].n, 7);
    assert.equal(ended, false);
    client.release();
    await within(5_000, 'pool.end() after the last release', ending);
    const { evictions } = pool.stats();
    assert.equal(evictions['shutdown-timeout'], 0);
    assert.equal(evictions['pool-ended'], 1);
  });

  test('rejects a waiter with PoolEndedError while the server refuses connections', async () => {
    const faults = await freshProxy();
    const pool = newPool({ host: faults.host, port: faults.port, connectionTimeoutMillis: 10_000 });
    try {
      await faults.refuse();
      const pending = pool.query('SELECT 1').then(() => undefined, (e: unknown) => e);
      // Wait until a connect attempt has really been refused, so the waiter is mid-retry.
      await waitFor('a refused connect', () => pool.waitingCount === 1 && pool.stats().connectErrors > 0);
      const ending = pool.end();
      const error = await pending;
      assert.ok(error instanceof PoolEndedError, String(error));
      assert.equal(error.code, 'PGL_POOL_ENDED');
      await within(15_000, 'pool.end() with a refused server', ending);
      assert.equal(pool.totalCount, 0);
    } finally {
      if (!pool.ending) await pool.end();
      await faults.accept();
    }
  });

  test('a second end() rejects, and so does every later checkout', async () => {
    const pool = newPool({});
    await pool.query('SELECT 1');
    await pool.end();
    assert.equal(pool.ended, true);
    await assert.rejects(pool.end(), PoolEndedError);
    await assert.rejects(pool.connect(), (e) => e instanceof PoolEndedError && e.code === 'PGL_POOL_ENDED');
    await assert.rejects(pool.query('SELECT 1'), PoolEndedError);
    await assert.rejects(pool.withClient(async () => 'ran'), PoolEndedError);
    const viaCallback = await new Promise<Error | undefined>((resolve) => pool.connect((err) => resolve(err)));
    assert.ok(viaCallback instanceof PoolEndedError);
  });
});
