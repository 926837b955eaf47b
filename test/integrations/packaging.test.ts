// The package as published: `npm pack`, installed from the registry (with a cache of its own) into a fresh project beside pg,
// @types/pg and typescript, then loaded from ESM and CommonJS against a real server and
// type-checked under node16 and bundler resolution; also run on every other supported Node.js
// release (scripts/node-versions.ts). `npm test` builds dist/ first; run
// `npm run build` before running this file on its own.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { PgCluster } from '../harness/cluster.js';
import { onProcessExit } from '../harness/exit-hooks.js';
import { NODE_VERSIONS, nodeBinary } from '../../scripts/node-versions.js';

const execFileAsync = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const fixtures = fileURLToPath(new URL('fixtures/packaging/', import.meta.url));
// Generous for a 2-core machine: an install from the registry takes about 10 s and a type-check about 5 s.
const CHILD_TIMEOUT_MILLIS = 120_000;
// Installed at the versions the repository's own install used.
const CONSUMER_DEPENDENCIES = ['pg', '@types/pg', '@types/node', 'typescript'];

let work = '';
let app = '';
let clusterStart: Promise<PgCluster> | undefined;
let packed: { filename: string; files: { path: string }[] };

/** Runs a command with a time limit; a failure carries its output. Returns stdout. */
async function run(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  try {
    const { stdout } = await execFileAsync(command, args, { cwd, env, timeout: CHILD_TIMEOUT_MILLIS, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
    throw new Error(`\`${command} ${args.join(' ')}\` failed in ${cwd}\n${stdout}\n${stderr}`, { cause: error });
  }
}

/** npm, with its debug logs written to the temp dir rather than ~/.npm/_logs. */
function npm(args: string[], cwd: string): Promise<string> {
  return run('npm', [...args, '--logs-dir', path.join(work, 'npm-logs')], cwd);
}

function installedVersion(name: string): string {
  return (JSON.parse(readFileSync(path.join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

before(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-packaging-'));
  // after() removes it; this covers a run that is interrupted.
  onProcessExit(() => rmSync(work, { recursive: true, force: true }));
  app = path.join(work, 'app');
  await mkdir(app);
  clusterStart = PgCluster.start();
  const [info] = JSON.parse(await npm(['pack', '--json', '--ignore-scripts', '--pack-destination', work], root)) as (typeof packed)[];
  assert.ok(info, 'npm pack reported no package');
  packed = info;
  await writeFile(path.join(app, 'package.json'), JSON.stringify({ name: 'pg-lifeline-consumer', version: '1.0.0', private: true }));
  // From the registry, into a cache of this run's own: a warm ~/.npm left by an earlier run must not
  // be what makes the install work, since a new machine has none.
  const dependencies = CONSUMER_DEPENDENCIES.map((name) => `${name}@${installedVersion(name)}`);
  const cache = path.join(work, 'npm-cache');
  await npm(['install', '--cache', cache, '--prefer-online', '--no-audit', '--no-fund', '--ignore-scripts', path.join(work, packed.filename), ...dependencies], app);
  await clusterStart;
});

after(async () => {
  // Also when before() failed part way, with the server still starting.
  await (await clusterStart?.catch(() => undefined))?.destroy();
  if (work) await rm(work, { recursive: true, force: true });
});

interface RuntimeReport {
  answer: number;
  instanceofPgPool: boolean;
  badOption: string | null;
  entry: string;
}

/** What the `pg-lifeline/pg` fixtures report. */
interface PgModuleReport {
  answer: number;
  isLifelinePool: boolean;
  instanceofPgPool: boolean;
  sameTypes: boolean;
  isLifelineClient: boolean;
  instanceofPgClient: boolean;
  clientAnswer: number;
  sameDefaults: boolean;
  entry: string;
}

/** Runs a runtime fixture in the consumer project, on `node` (by default the one running the tests). */
async function runFixture<Report = RuntimeReport>(name: string, node = process.execPath): Promise<Report> {
  const cluster = await clusterStart;
  assert.ok(cluster);
  await copyFile(path.join(fixtures, name), path.join(app, name));
  const stdout = await run(node, [name], app, { ...process.env, DATABASE_URL: cluster.connectionString() });
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Report;
}

/** Type-checks `files` (copies of the usage fixture) in the consumer project under `options`. */
async function typeCheck(name: string, options: Record<string, unknown>, files: string[]): Promise<void> {
  const dir = path.join(app, name);
  await mkdir(dir);
  const usage = await readFile(path.join(fixtures, 'usage.ts.txt'), 'utf8');
  for (const file of files) await writeFile(path.join(dir, file), usage);
  // skipLibCheck off, so errors inside the published declarations are reported too.
  const compilerOptions = { target: 'es2022', strict: true, skipLibCheck: false, noEmit: true, ...options };
  await writeFile(path.join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions, files }));
  await run(process.execPath, [path.join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], app);
}

const DECLARATION_EXTENSIONS: Record<string, string> = { '.js': '.d.ts', '.cjs': '.d.cts', '.mjs': '.d.mts' };

/** The declaration file TypeScript reads for a relative module specifier. */
function declarationOf(module: string): string {
  const extension = path.extname(module);
  const declaration = DECLARATION_EXTENSIONS[extension];
  return declaration === undefined ? `${module}.d.ts` : module.slice(0, -extension.length) + declaration;
}

/** Every string in a package.json field, however deeply nested (`exports`, `bin`). */
function stringLeaves(value: unknown): string[] {
  if (typeof value === 'string') return [value];
  return typeof value === 'object' && value !== null ? Object.values(value).flatMap(stringLeaves) : [];
}

/** Every `types` target in a package.json `exports` tree. */
function exportedTypes(exports: unknown): string[] {
  if (typeof exports !== 'object' || exports === null) return [];
  return Object.entries(exports).flatMap(([key, value]) => (key === 'types' && typeof value === 'string' ? [value] : exportedTypes(value)));
}

/**
 * Each `any` type keyword in the declaration files reachable from `entries` through relative
 * imports, exports and import types, as `file:line: text`. Parsing, rather than matching text,
 * leaves out comments, string literals ('any' is a target_session_attrs value) and names.
 */
function anyTypes(packageDir: string, entries: string[]): string[] {
  const found: string[] = [];
  const queue = entries.map((entry) => path.resolve(packageDir, entry));
  const seen = new Set<string>();
  for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
    if (seen.has(file)) continue;
    seen.add(file);
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const follow = (specifier: ts.Node | undefined): void => {
      if (specifier !== undefined && ts.isStringLiteral(specifier) && specifier.text.startsWith('.')) {
        queue.push(declarationOf(path.resolve(path.dirname(file), specifier.text)));
      }
    };
    const visit = (node: ts.Node): void => {
      if (node.kind === ts.SyntaxKind.AnyKeyword) {
        const { line } = source.getLineAndCharacterOfPosition(node.getStart(source));
        found.push(`${path.relative(packageDir, file)}:${line + 1}: ${source.text.split('\n')[line]?.trim()}`);
      }
      if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) follow(node.moduleSpecifier);
      if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) follow(node.argument.literal);
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return found;
}

describe('the packed package in a fresh project', () => {
  test('the tarball holds dist/ and README.md, including every file package.json points to', () => {
    const files = packed.files.map((file) => file.path);
    const strays = files.filter((file) => !(file.startsWith('dist/') || file === 'README.md' || file === 'package.json'));
    assert.deepEqual(strays, []);
    const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Record<string, unknown>;
    const targets = stringLeaves(['main', 'module', 'types', 'bin', 'exports'].map((field) => manifest[field]));
    const missing = targets.filter((target) => !files.includes(path.normalize(target)));
    assert.deepEqual(missing, [], 'missing from the tarball (run `npm run build` first)');
  });

  test('ESM: import works against a real server, and the Pool is the app\'s pg.Pool', async () => {
    const report = await runFixture('esm.mjs');
    assert.deepEqual(report, {
      answer: 42,
      instanceofPgPool: true,
      badOption: 'max',
      entry: pathToFileURL(path.join(app, 'node_modules', 'pg-lifeline', 'dist', 'index.js')).href,
    });
  });

  test('CommonJS: require works against a real server, and the Pool is the app\'s pg.Pool', async () => {
    const report = await runFixture('cjs.cjs');
    assert.deepEqual(report, {
      answer: 42,
      instanceofPgPool: true,
      badOption: 'max',
      entry: path.join(app, 'node_modules', 'pg-lifeline', 'dist', 'index.cjs'),
    });
  });

  // TypeORM's `driver` and Sequelize's `dialectModule` take a pg-shaped module: everything pg's, except the Pool and the Client.
  for (const [fixture, format] of [['pg-esm.mjs', 'ESM'], ['pg-cjs.cjs', 'CommonJS']] as const) {
    test(`pg-lifeline/pg from ${format}: the library's Pool and Client beside pg's own types`, async () => {
      const report = await runFixture<PgModuleReport>(fixture);
      const file = path.join(app, 'node_modules', 'pg-lifeline', 'dist', format === 'ESM' ? 'pg.js' : 'pg.cjs');
      const entry = format === 'ESM' ? pathToFileURL(file).href : file;
      assert.deepEqual(report, { answer: 42, isLifelinePool: true, instanceofPgPool: true, sameTypes: true, isLifelineClient: true, instanceofPgClient: true, clientAnswer: 42, sameDefaults: true, entry });
    });
  }

  // The suite runs on one Node.js; the packed package is also run on every other supported line.
  for (const version of NODE_VERSIONS) {
    test(`Node.js ${version}: import and require work against a real server`, async (t) => {
      const node = nodeBinary(version);
      if (!existsSync(node)) {
        // .ci/run fetches them, so CI always runs these.
        assert.notEqual(process.env.CI, 'true', `${node} is missing: .ci/run should have fetched it`);
        t.skip(`Node.js ${version} not fetched: run \`npx tsx scripts/node-versions.ts\``);
        return;
      }
      for (const fixture of ['esm.mjs', 'cjs.cjs']) {
        const report = await runFixture(fixture, node);
        assert.deepEqual([report.answer, report.instanceofPgPool, report.badOption], [42, true, 'max'], `${fixture} on ${version}`);
      }
    });
  }

  // Each check is its own tsc process in its own directory, so they run side by side.
  describe('TypeScript consumers type-check', { concurrency: true }, () => {
    test('module node16: an ESM (.mts) and a CommonJS (.cts) consumer', async () => {
      await typeCheck('node16', { module: 'node16', moduleResolution: 'node16' }, ['usage.mts', 'usage.cts']);
    });

    test('module esnext, bundler resolution', async () => {
      await typeCheck('bundler-esnext', { module: 'esnext', moduleResolution: 'bundler' }, ['usage.ts']);
    });

    test('module preserve, bundler resolution', async () => {
      await typeCheck('bundler-preserve', { module: 'preserve', moduleResolution: 'bundler' }, ['usage.ts']);
    });

    // An older CommonJS app: node10 resolution and no esModuleInterop, so the declarations must not
    // lean on a default import of pg.
    test('module commonjs, node10 resolution, without esModuleInterop', async () => {
      await typeCheck('commonjs-node10', { module: 'commonjs', moduleResolution: 'node10', esModuleInterop: false }, ['usage.ts']);
    });
  });

  test('no `any` in the public types', () => {
    const packageDir = path.join(app, 'node_modules', 'pg-lifeline');
    const manifest = JSON.parse(readFileSync(path.join(packageDir, 'package.json'), 'utf8')) as { types: string; exports: unknown };
    const found = anyTypes(packageDir, [manifest.types, ...exportedTypes(manifest.exports)]);
    assert.deepEqual(found, [], `\`any\` in the published declarations:\n${found.join('\n')}`);
  });
});
