// Each integration as a user sets it up: `npm pack`, installed from the registry (with a cache of its
// own) into one fresh app beside pg and every library, at the versions the repository installed.
// Then, per library, a plain-JS app from fixtures/fresh-app/, wired as docs/integrations.md says,
// runs the cases and reports JSON over IPC, while this file drives the server faults it asks for
// (kills, a fast restart). `npm test` builds dist/ first; run `npm run build` before running this
// file on its own.
import assert from 'node:assert/strict';
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import { PgCluster } from '../harness/cluster.js';
import { onProcessExit } from '../harness/exit-hooks.js';
import { waitFor } from '../harness/wait.js';
import { NODE_VERSIONS, nodeBinary } from '../../scripts/node-versions.js';
import { checkLibrary, type AppReport, type Library } from './fresh-app-checks.js';

const execFileAsync = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const fixtures = fileURLToPath(new URL('fixtures/fresh-app/', import.meta.url));
// An install from an empty cache on a 2-core machine took 7-15 s for these libraries (35 s beside another install).
const INSTALL_TIMEOUT_MILLIS = 120_000;
// One app's cases, restarts included.
const APP_TIMEOUT_MILLIS = 45_000;
const NODE_22 = NODE_VERSIONS.find((version) => version.startsWith('22.'));

/**
 * The libraries, each with its fixture and the packages the app installs for it. Adding one is a
 * fixture in fixtures/fresh-app/ (reporting through app-kit.cjs) and an entry here.
 */
const LIBRARIES: readonly Library[] = [
  { key: 'typeorm', name: 'TypeORM', fixture: 'typeorm.cjs', packages: ['typeorm'], node: 20, queue: false },
  { key: 'knex', name: 'Knex', fixture: 'knex.mjs', packages: ['knex'], node: 20, queue: false },
  { key: 'graphile_worker', name: 'graphile-worker', fixture: 'graphile-worker.mjs', packages: ['graphile-worker'], node: 22, queue: true },
  { key: 'pg_boss', name: 'pg-boss', fixture: 'pg-boss.mjs', packages: ['pg-boss'], node: 22, queue: true },
  { key: 'mikro_orm', name: 'MikroORM', fixture: 'mikro-orm.mjs', packages: ['@mikro-orm/core', '@mikro-orm/postgresql', 'kysely'], node: 22, queue: false },
  { key: 'sequelize6', name: 'Sequelize 6', fixture: 'sequelize-6.cjs', packages: ['sequelize', 'pg-hstore'], node: 20, queue: false },
  { key: 'sequelize7', name: 'Sequelize 7', fixture: 'sequelize-7.mjs', packages: ['@sequelize/core', '@sequelize/postgres'], node: 20, queue: false },
];

let work = '';
let app = '';
let clusterStart: Promise<PgCluster> | undefined;

/** Runs a command with a time limit; a failure carries its output. */
async function run(command: string, args: string[], cwd: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, timeout: INSTALL_TIMEOUT_MILLIS, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`\`${command} ${args.join(' ')}\` failed in ${cwd}\n${stdout}\n${stderr}`, { cause: error });
  }
}

function installedVersion(name: string): string {
  return (JSON.parse(readFileSync(path.join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-fresh-app-'));
  // after() removes it; this covers a run that is interrupted.
  onProcessExit(() => rmSync(work, { recursive: true, force: true }));
  app = path.join(work, 'app');
  await mkdir(app);
  clusterStart = PgCluster.start();
  const logs = ['--logs-dir', path.join(work, 'npm-logs')];
  const [packed] = JSON.parse(await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work, ...logs], root)) as { filename: string }[];
  assert.ok(packed, 'npm pack reported no package');
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'pg-lifeline-fresh-app', version: '1.0.0', private: true }));
  // One install for every library, from the registry into an empty cache of this run's own, as on a new machine.
  const dependencies = ['pg', ...LIBRARIES.flatMap((library) => library.packages)].map((name) => `${name}@${installedVersion(name)}`);
  const started = Date.now();
  await run('npm', ['install', '--cache', path.join(work, 'npm-cache'), '--prefer-online', '--no-audit', '--no-fund', '--ignore-scripts', ...logs, path.join(work, packed.filename), ...dependencies], app);
  console.log(`figure: fresh-app | npm install of the tarball, pg and ${LIBRARIES.map((l) => l.name).join(', ')} from an empty cache | ${((Date.now() - started) / 1000).toFixed(1)} s`);
  for (const file of await readdir(fixtures)) await copyFile(path.join(fixtures, file), path.join(app, file));
  await clusterStart;
});

after(async () => {
  // Also when before() failed part way, with the server still starting.
  await (await clusterStart?.catch(() => undefined))?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

/** The statements the test itself runs in a library's database: its independent view of what was saved. */
async function queryIn<R>(cluster: PgCluster, database: string, sql: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ ...cluster.clientConfig(), database, application_name: 'fresh-app-test', connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined); // a failure also rejects the pending call
  await client.connect();
  try {
    return (await client.query(sql, values)).rows as R[];
  } finally {
    await client.end();
  }
}

/** What the app asks the test to do to the server, as it would happen to it in production. */
async function serve(cluster: PgCluster, appName: string, message: { what: string; pid?: number }): Promise<unknown> {
  switch (message.what) {
    case 'backends':
      return (await cluster.backendPids(appName)).length;
    case 'kill-backends':
      return cluster.terminateBackends(appName);
    case 'kill-pid': {
      const { pid } = message;
      await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
      await waitFor(`backend ${pid} to exit`, async () => !(await cluster.backendPids(appName)).includes(pid ?? -1));
      return null;
    }
    case 'restart':
      await cluster.restart('fast');
      return null;
    default:
      throw new Error(`unknown request ${message.what}`);
  }
}

/** The Node.js that runs `library`'s app: this one, or the 22 from scripts/node-versions.ts where this is older than the library needs. */
function nodeFor(library: Library): string {
  if (Number(process.versions.node.split('.')[0]) >= library.node) return process.execPath;
  assert.ok(NODE_22, 'scripts/node-versions.ts lists no Node.js 22 release');
  return nodeBinary(NODE_22);
}

/** Runs one library's fixture in the app on its Node.js, answering its requests, and resolves with its report. */
function runApp(cluster: PgCluster, library: Library, execPath: string, database: string): Promise<AppReport> {
  const appName = `fresh-${library.key}`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    DATABASE_URL: cluster.connectionString(database),
    FRESH_APP_SERVER: JSON.stringify({ ...cluster.clientConfig(), database }),
    FRESH_APP_NAME: appName,
  };
  const child: ChildProcess = fork(path.join(app, library.fixture), [], { cwd: app, execPath, execArgv: [], env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  let output = '';
  const keep = (chunk: Buffer): void => void (output = (output + chunk.toString()).slice(-8_000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return new Promise<AppReport>((resolve, reject) => {
    let report: AppReport | undefined;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${library.name} app did not finish within ${APP_TIMEOUT_MILLIS} ms\n${output}`));
    }, APP_TIMEOUT_MILLIS);
    child.on('message', (message: { type: string; id?: number; what?: string; pid?: number; report?: AppReport }) => {
      if (message.type === 'report') report = message.report;
      if (message.type !== 'ask') return;
      serve(cluster, appName, { what: String(message.what), ...(message.pid === undefined ? {} : { pid: message.pid }) }).then(
        (result) => child.connected && child.send({ id: message.id, result }),
        (error: unknown) => child.connected && child.send({ id: message.id, error: String(error) }),
      );
    });
    // A Node.js that cannot be started: no 'exit' follows.
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (report === undefined) reject(new Error(`${library.name} app exited (${code ?? signal}) without a report\n${output}`));
      else resolve({ ...report, exitCode: code, output });
    });
  });
}

describe('each integration, wired as documented, in a fresh app that installed the packed package', () => {
  for (const library of LIBRARIES) {
    test(`${library.name} on Node.js ${library.node}`, async (t) => {
      const cluster = await clusterStart;
      assert.ok(cluster);
      const execPath = nodeFor(library);
      if (!existsSync(execPath)) {
        // .ci/run fetches it, so CI always runs these.
        assert.notEqual(process.env.CI, 'true', `${execPath} is missing: .ci/run should have fetched it`);
        t.skip(`Node.js ${NODE_22} not fetched: run \`npx tsx scripts/node-versions.ts\``);
        return;
      }
      const database = `fresh_${library.key}`;
      await cluster.query(`CREATE DATABASE ${database}`);
      const report = await runApp(cluster, library, execPath, database);
      await checkLibrary(t, { library, report, app, count: (sql, values) => queryIn(cluster, database, sql, values) });
    });
  }
});
