// The built package as consumers load it: CommonJS require() and ESM import() of dist/.
// `npm test` builds first; run `npm run build` before running this file on its own.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));

/** Absolute path of a dist file; fails with the fix when the build has not run. */
function distFile(name: string): string {
  const file = fileURLToPath(new URL(`../dist/${name}`, import.meta.url));
  assert.ok(existsSync(file), `${file} is missing: run \`npm run build\` before this test`);
  return file;
}

/** What each child reports about the module it loaded. */
interface Report {
  exported: string[];
  poolIsClass: boolean;
  instanceofPgPool: boolean;
  instanceofPgClientClass: boolean;
  configError: { isConfigError: boolean; isLifelineError: boolean; isError: boolean; name: string; code: string; option: string; message: string };
  selfResolved: string;
  ended: boolean;
}

// Shared by both children: `lib` is the loaded package, `pg` the app's own pg.
const probe = `
  const pool = new lib.Pool();
  let error;
  try { new lib.Pool({ max: 0 }); } catch (e) { error = e; }
  const report = {
    exported: Object.keys(lib).filter((k) => k !== 'default' && k !== '__esModule').sort(),
    poolIsClass: typeof lib.Pool === 'function',
    instanceofPgPool: pool instanceof pg.Pool,
    instanceofPgClientClass: pool.Client === pg.Client,
    configError: {
      isConfigError: error instanceof lib.ConfigError,
      isLifelineError: error instanceof lib.LifelineError,
      isError: error instanceof Error,
      name: error?.name, code: error?.code, option: error?.option, message: error?.message,
    },
    selfResolved: RESOLVED,
  };
  pool.end().then(() => {
    report.ended = pool.ended;
    console.log(JSON.stringify(report));
  });
`;

async function runChild(args: string[]): Promise<Report> {
  // cwd = the package root, so `pg` and the package's own name resolve as in a consumer's project.
  const { stdout } = await execFileAsync(process.execPath, args, { cwd: root, timeout: 20_000 });
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '') as Report;
}

function cjsChild(): Promise<Report> {
  const file = distFile('index.cjs');
  const code = `const lib = require(${JSON.stringify(file)}); const pg = require('pg');` +
    probe.replace('RESOLVED', "require.resolve('pg-lifeline')");
  return runChild(['-e', code]);
}

function esmChild(): Promise<Report> {
  const file = distFile('index.js');
  const code = `const lib = await import(${JSON.stringify(pathToFileURL(file).href)}); const { default: pg } = await import('pg');` +
    probe.replace('RESOLVED', "import.meta.resolve('pg-lifeline')");
  return runChild(['--input-type=module', '-e', code]);
}

const errorClasses = [
  'AbortedError',
  'AcquireTimeoutError',
  'ClientReleasedError',
  'ConfigError',
  'ConnectFailedError',
  'ConnectionLostError',
  'DoubleReleaseError',
  'LifelineError',
  'PoolEndedError',
  'TransactionRolledBackError',
];

function checkReport(report: Report): void {
  assert.ok(report.poolIsClass);
  assert.ok(report.instanceofPgPool, 'new Pool() should be an instance of the app\'s pg.Pool');
  assert.ok(report.instanceofPgClientClass, 'connections should use the app\'s pg.Client');
  assert.ok(report.ended, 'pool.end() should finish');
  for (const name of [...errorClasses, 'Pool', 'isConnectionError']) assert.ok(report.exported.includes(name), `missing export ${name}`);
  const e = report.configError;
  assert.deepEqual(
    { isConfigError: e.isConfigError, isLifelineError: e.isLifelineError, isError: e.isError, name: e.name, code: e.code, option: e.option },
    { isConfigError: true, isLifelineError: true, isError: true, name: 'ConfigError', code: 'PGL_CONFIG', option: 'max' },
  );
}

describe('built package', () => {
  test('declarations: one set, re-exported for ESM so both formats share the same types', () => {
    const cts = readFileSync(distFile('index.d.cts'), 'utf8');
    assert.match(cts, /class Pool\b/);
    assert.match(cts, /class ConfigError\b/);
    assert.match(readFileSync(distFile('index.d.ts'), 'utf8'), /export \* from '\.\/index\.cjs'/);
  });

  test('import and require in one process share every class', async () => {
    // Two copies of a class would break `instanceof` and the Pool's identity in mixed apps.
    const code = `
      import { createRequire } from 'node:module';
      const esm = await import(${JSON.stringify(pathToFileURL(distFile('index.js')).href)});
      const cjs = createRequire(import.meta.url)(${JSON.stringify(distFile('index.cjs'))});
      const names = Object.keys(cjs).filter((k) => k !== '__esModule');
      console.log(JSON.stringify(names.filter((k) => esm[k] !== cjs[k])));
    `;
    const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', code], { cwd: root, timeout: 20_000 });
    assert.deepEqual(JSON.parse(stdout.trim()), []);
  });

  test('CommonJS require() gives a working Pool', async () => {
    const report = await cjsChild();
    checkReport(report);
    // package.json "exports" sends require() of the package name to the CommonJS build.
    assert.equal(report.selfResolved, distFile('index.cjs'));
  });

  test('ESM import() gives a working Pool', async () => {
    const report = await esmChild();
    checkReport(report);
    assert.equal(report.selfResolved, pathToFileURL(distFile('index.js')).href);
  });

  test('both formats export the same names and raise the same errors', async () => {
    const [cjs, esm] = await Promise.all([cjsChild(), esmChild()]);
    assert.deepEqual(cjs.exported, esm.exported);
    assert.deepEqual(cjs.configError, esm.configError);
  });

  test('pg-lifeline/pg: the library\'s Pool and Client and pg\'s own types and defaults, from both formats', async () => {
    // TypeORM's `driver` option calls `new driver.Pool(options)` and reads `driver.defaults`; Sequelize's
    // `dialectModule` / `pgModule` calls `new lib.Client(config)`.
    const code = `
      import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      const pg = require('pg');
      const lib = require(${JSON.stringify(distFile('index.cjs'))});
      const cjs = require(${JSON.stringify(distFile('pg.cjs'))});
      const esm = await import(${JSON.stringify(pathToFileURL(distFile('pg.js')).href)});
      const report = {};
      for (const [format, mod] of [['cjs', cjs], ['esm', esm]]) {
        const pool = new mod.Pool();
        report[format] = {
          exported: Object.keys(mod).filter((k) => k !== '__esModule').sort(),
          isLifelinePool: mod.Pool === lib.Pool,
          instanceofPgPool: pool instanceof pg.Pool,
          isLifelineClient: mod.Client === lib.Client,
          instanceofPgClient: new mod.Client() instanceof pg.Client,
          pgOwn: ['Query', 'Connection', 'Result', 'TypeOverrides', 'DatabaseError', 'types', 'defaults', 'escapeIdentifier', 'escapeLiteral'].filter((k) => mod[k] !== pg[k]),
          resolved: format === 'cjs' ? require.resolve('pg-lifeline/pg') : import.meta.resolve('pg-lifeline/pg'),
        };
        await pool.end();
      }
      console.log(JSON.stringify(report));
    `;
    const { stdout } = await execFileAsync(process.execPath, ['--input-type=module', '-e', code], { cwd: root, timeout: 20_000 });
    const report = JSON.parse(stdout.trim()) as Record<'cjs' | 'esm', { exported: string[]; isLifelinePool: boolean; instanceofPgPool: boolean; isLifelineClient: boolean; instanceofPgClient: boolean; pgOwn: string[]; resolved: string }>;
    const exported = ['Client', 'Connection', 'DatabaseError', 'Pool', 'Query', 'Result', 'TypeOverrides', 'defaults', 'escapeIdentifier', 'escapeLiteral', 'types'];
    const expected = { exported, isLifelinePool: true, instanceofPgPool: true, isLifelineClient: true, instanceofPgClient: true, pgOwn: [] };
    assert.deepEqual(report.cjs, { ...expected, resolved: distFile('pg.cjs') });
    assert.deepEqual(report.esm, { ...expected, resolved: pathToFileURL(distFile('pg.js')).href });
    // One set of declarations; the ESM one re-exports it, and neither bundles the library again.
    assert.match(readFileSync(distFile('pg.d.cts'), 'utf8'), /export \{ Client, ClientOptions, Pool, PoolOptions \} from '\.\/index\.cjs'/);
    assert.match(readFileSync(distFile('pg.d.ts'), 'utf8'), /export \* from '\.\/pg\.cjs'/);
  });

  test('the built CLI runs: --version and --help', async () => {
    const cli = distFile('cli.cjs');
    const { stdout: version } = await execFileAsync(process.execPath, [cli, '--version'], { cwd: root, timeout: 20_000 });
    assert.equal(version.trim(), JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version);
    const { stdout: help } = await execFileAsync(process.execPath, [cli, '--help'], { cwd: root, timeout: 20_000 });
    assert.match(help, /doctor/);
  });
});
