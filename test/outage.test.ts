// Outages that are not a dead connection: a suspended process, and a server out of connections.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { Pool } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
before(async () => {
  cluster = await PgCluster.start({ settings: { max_connections: 6, superuser_reserved_connections: 1 } });
  await cluster.query(`CREATE ROLE app LOGIN PASSWORD '${cluster.password}'`);
});
after(() => cluster.destroy());

test('a suspended process validates every idle connection before reusing it', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-suspend-'));
  const script = path.join(dir, 'child.mts');
  // A wide validation window: only the suspension can make the pool probe before reuse.
  await writeFile(
    script,
    `import { Pool } from ${JSON.stringify(new URL('../src/index.ts', import.meta.url).href)};
     import { createInterface } from 'node:readline';
     const pool = new Pool({ ...JSON.parse(process.env.PG_CONFIG), max: 1, validationWindowMillis: 600000, keepaliveIntervalMillis: 0 });
     await pool.query('SELECT 1');
     pool.on('suspend', () => console.log('suspended'));
     console.log('ready');
     for await (const line of createInterface({ input: process.stdin })) {
       if (line !== 'go') continue;
       await pool.query('SELECT 1');
       const { suspensions, validations } = pool.stats();
       console.log(JSON.stringify({ suspensions, validations }));
       await pool.end();
       process.exit(0);
     }`,
  );
  const child = spawn(process.execPath, ['--import', 'tsx', script], { env: { ...process.env, PG_CONFIG: JSON.stringify(cluster.clientConfig()) }, stdio: ['pipe', 'pipe', 'inherit'] });
  const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    assert.equal((await lines.next()).value, 'ready');
    // Freeze it longer than the pool's tolerance for a late maintenance tick, then thaw it.
    child.kill('SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, 3500));
    child.kill('SIGCONT');
    // Ask at once: the request may beat the overdue maintenance tick, and must still be safe.
    child.stdin.write('go\n');
    let line = String((await lines.next()).value);
    if (line === 'suspended') line = String((await lines.next()).value);
    const report = JSON.parse(line) as { suspensions: number; validations: number };
    assert.ok(report.suspensions >= 1, JSON.stringify(report));
    assert.equal(report.validations, 1, 'the idle connection was probed before reuse');
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 0);
  } finally {
    clearTimeout(guard);
    if (child.exitCode === null) child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
});

test('53300 too many connections is waited out: every query succeeds on the connections there are', async () => {
  // Five slots for ordinary roles; four are taken by others, one is left for the pool. Sessions
  // of the test before may still be on their way out: the count must start from zero.
  await waitFor('earlier sessions to end', async () => (await cluster.backendPids()).length === 0);
  const squatters = new Pool({ ...cluster.clientConfig(), user: 'app', max: 4, application_name: 'squatters' });
  const held = await Promise.all([1, 2, 3, 4].map(() => squatters.connect()));
  const pool = new Pool({ ...cluster.clientConfig(), user: 'app', max: 4, application_name: 'squeezed' });
  try {
    const results = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => pool.query('SELECT $1::int AS n', [n])));
    assert.deepEqual(results.map((r) => r.rows[0]?.n), [1, 2, 3, 4, 5, 6]);
    // On a loaded machine the queries can all finish on the one connection before a refusal arrives.
    await waitFor('the server to refuse the extra connections', () => pool.stats().connectErrors >= 1);
    // Attempts may still be in flight (and refused), so count the connections that ever opened.
    assert.equal(pool.stats().connects, 1);
  } finally {
    for (const client of held) client.release();
    await squatters.end();
    await pool.end();
  }
});
