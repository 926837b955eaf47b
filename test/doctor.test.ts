// `pg-lifeline doctor`, run as a child process (src/cli.ts under tsx) against real servers: a healthy
// one, bad logins, a closed port, a silent network, TLS with a self-signed certificate, short
// idle_session_timeouts, a small max_connections, and PgBouncer in transaction and session pooling.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { PgCluster } from './harness/cluster.js';
import { HARNESS_PASSWORD } from './harness/pgbin.js';
import { Bouncer, pgbouncerBinary } from './harness/pgbouncer.js';
import { FaultProxy } from './harness/proxy.js';

const execFileAsync = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = path.join(ROOT, 'src', 'cli.ts');
const PASSWORD = 'S3cret-pw-9x!';
const noBouncer = !pgbouncerBinary() && 'pgbouncer is not installed (.ci/run installs it)';

interface Check {
  name: string;
  verdict: 'ok' | 'warn' | 'fail';
  found: string;
  advice: string;
  data?: Record<string, any>;
}
interface Report {
  ok: boolean;
  target: string;
  source: string;
  checks: Check[];
  skipped: Array<{ name: string; reason: string }>;
}
interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the CLI with only the given PG* variables (none inherited from the test's environment). */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(PG|DATABASE_URL$|NO_COLOR$|FORCE_COLOR$)/.test(k)));
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: { ...base, ...env }, timeout: 40_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
      resolve({ code, stdout, stderr, ms: performance.now() - started });
    });
  });
}

async function doctor(args: string[], env: Record<string, string> = {}): Promise<Run & { report: Report; check: (name: string) => Check }> {
  const run = await cli(['doctor', ...args, '--json'], env);
  let report: Report;
  try {
    report = JSON.parse(run.stdout) as Report;
  } catch {
    assert.fail(`not JSON (exit ${run.code}):\n${run.stdout}\n${run.stderr}`);
  }
  const check = (name: string): Check => {
    const found = report.checks.find((c) => c.name === name);
    assert.ok(found, `no ${name} check in ${JSON.stringify(report, null, 2)}`);
    return found;
  };
  return { ...run, report, check };
}

const show = (report: Report): string => JSON.stringify(report.checks.map(({ data: _, ...c }) => c), null, 2);

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

let main: PgCluster; // no TLS (the loopback verdict); `app` has its own password; roles with short idle_session_timeouts
let tls: PgCluster; // ssl = on with a self-signed certificate valid for 2 days
let small: PgCluster; // max_connections = 10
let tmp: string;
let certFile: string;
// Every harness server (and role made here) has the harness password unless a test gives another.
const url = (cluster: { host: string; port: number }, user = 'postgres', password = HARNESS_PASSWORD, db = 'postgres'): string =>
  `postgres://${user}:${encodeURIComponent(password)}@${cluster.host}:${cluster.port}/${db}`;

before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-doctor-'));
  certFile = path.join(tmp, 'cert.pem');
  const keyFile = path.join(tmp, 'key.pem');
  await execFileAsync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=localhost']);
  [main, tls, small] = await Promise.all([
    // `nobody` does not exist: only without a password does the server say so (28000), not that the password failed.
    PgCluster.start({ tls: false, hba: ['host all nobody 127.0.0.1/32 trust'] }),
    PgCluster.start({ ssl: { certFile, keyFile } }),
    PgCluster.start({ settings: { max_connections: 10 }, tls: false }),
  ]);
  await main.query(`CREATE ROLE app LOGIN PASSWORD '${PASSWORD.replace(/'/g, "''")}'`);
  await main.query(`CREATE ROLE idle2 LOGIN PASSWORD '${HARNESS_PASSWORD}'; ALTER ROLE idle2 SET idle_session_timeout = '2s'`);
  await main.query(`CREATE ROLE idle15 LOGIN PASSWORD '${HARNESS_PASSWORD}'; ALTER ROLE idle15 SET idle_session_timeout = '1500ms'`);
});

after(async () => {
  await Promise.all([main?.destroy(), tls?.destroy(), small?.destroy()]);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('pg-lifeline doctor', { concurrency: 4 }, () => {
  test('a healthy server: every check ok, exit 0, and the password from the URL never shows', async () => {
    const run = await doctor([url(main, 'app', PASSWORD)]);
    const { report } = run;
    assert.equal(run.code, 0, show(report));
    assert.equal(report.ok, true);
    assert.deepEqual(report.checks.map((c) => c.name), ['reachability', 'auth', 'tls', 'timeouts', 'proxy', 'headroom', 'restarts']);
    for (const check of report.checks) {
      // The cluster was started moments ago, so the restart check rightly warns.
      const expected = check.name === 'restarts' ? 'warn' : 'ok';
      assert.equal(check.verdict, expected, `${check.name}: ${check.found} → ${check.advice}`);
    }
    assert.match(run.check('tls').found, /loopback/);
    assert.match(run.check('timeouts').found, /dead network: a statement in flight settles within about 13 s \(monitorGraceMillis 2000 \+ monitorDetectionMillis 10000\)/);
    assert.match(run.check('restarts').found, /restarted .* ago/);
    assert.equal(run.check('proxy').data?.['detected'], false);
    assert.equal(run.check('proxy').data?.['listen'], 'works');
    assert.match(report.target, /^postgres:\/\/app:\*\*\*\*@127\.0\.0\.1:\d+\/postgres/);
    for (const text of [run.stdout, run.stderr]) {
      assert.ok(!text.includes(PASSWORD) && !text.includes(encodeURIComponent(PASSWORD)), 'the password was printed');
    }
  });

  test('the human-readable report, from PG* variables: one line found, one line advice, no colour in a pipe', async () => {
    const run = await cli(['doctor'], { PGHOST: main.host, PGPORT: String(main.port), PGUSER: 'app', PGPASSWORD: PASSWORD, PGDATABASE: 'postgres' });
    assert.equal(run.code, 0, run.stdout + run.stderr);
    assert.ok(!run.stdout.includes('\x1b['), 'ANSI colour in a pipe');
    assert.ok(!run.stdout.includes(PASSWORD));
    assert.match(run.stdout, /postgres:\/\/app:\*\*\*\*@127\.0\.0\.1:\d+\/postgres\?sslmode=prefer {2}\(from environment\)/);
    for (const title of ['Reachability', 'Auth', 'TLS', 'Timeouts', 'Proxy', 'Headroom', 'Restarts']) {
      assert.match(run.stdout, new RegExp(`^ {2}(ok|warn) +${title} +\\S.*\\n +→ \\S`, 'm'), title);
    }
    assert.match(run.stdout, /\n6 ok, 1 warn, 0 fail\n$/);
  });

  test('DATABASE_URL and the keyword/value form are read, and their passwords never show', async () => {
    const keywords = `host=${main.host} port=${main.port} user=app password='${PASSWORD}' dbname=postgres`;
    const [fromEnv, fromKeywords] = await Promise.all([
      doctor([], { DATABASE_URL: url(main, 'app', PASSWORD), PGPASSWORD: 'ignored-because-the-url-has-one' }),
      doctor([keywords]),
    ]);
    for (const run of [fromEnv, fromKeywords]) {
      assert.equal(run.check('auth').verdict, 'ok', run.check('auth').found);
      assert.match(run.report.target, /^postgres:\/\/app:\*\*\*\*@127\.0\.0\.1:\d+\/postgres\?sslmode=prefer$/);
      assert.ok(!run.stdout.includes(PASSWORD) && !run.stderr.includes(PASSWORD), 'the password was printed');
    }
    assert.equal(fromEnv.report.source, 'DATABASE_URL');
    assert.equal(fromKeywords.report.source, 'argument');
  });

  test('a wrong password fails the login with 28P01, exit 1, and the rest is not run', async () => {
    const run = await doctor([url(main, 'app', 'not-the-password')]);
    assert.equal(run.code, 1);
    const auth = run.check('auth');
    assert.equal(auth.verdict, 'fail');
    assert.match(auth.found, /password authentication failed.*28P01/);
    assert.match(auth.advice, /password/);
    assert.equal(run.check('reachability').verdict, 'ok');
    assert.deepEqual(run.report.skipped.map((s) => s.name), ['tls', 'timeouts', 'proxy', 'headroom', 'restarts']);
    assert.ok(!run.stdout.includes('not-the-password'));
  });

  test('an unknown role (28000) and an unknown database (3D000) get their own advice', async () => {
    const [role, db] = await Promise.all([doctor([url(main, 'nobody')]), doctor([url(main, 'postgres', undefined, 'nosuchdb')])]);
    assert.equal(role.code, 1);
    assert.match(role.check('auth').found, /role "nobody" does not exist.*28000/);
    assert.match(role.check('auth').advice, /CREATE ROLE nobody/);
    assert.equal(db.code, 1);
    assert.match(db.check('auth').found, /3D000/);
    assert.match(db.check('auth').advice, /CREATE DATABASE "nosuchdb"/);
  });

  test('a closed port fails reachability at once, exit 1', async () => {
    const run = await doctor([url({ host: '127.0.0.1', port: await freePort() })]);
    assert.equal(run.code, 1);
    const reach = run.check('reachability');
    assert.equal(reach.verdict, 'fail');
    assert.match(reach.found, /ECONNREFUSED/);
    assert.match(reach.advice, /nothing listens/);
    assert.equal(run.report.checks.length, 1);
    assert.ok(run.report.skipped.some((s) => s.name === 'auth'));
  });

  test('a server that accepts TCP but never answers: the login fails within --timeout-ms', async () => {
    const proxy = await FaultProxy.start(main);
    try {
      proxy.blackhole();
      const run = await doctor([url(proxy), '--timeout-ms', '500']);
      assert.equal(run.code, 1);
      assert.equal(run.check('reachability').verdict, 'ok');
      assert.equal(run.check('auth').verdict, 'fail');
      // The login ended on its own deadline (a hang would never return); no bound on elapsed time,
      // which a loaded 2-core machine can stretch.
      assert.match(run.check('auth').found, /timeout/i);
    } finally {
      await proxy.close();
    }
  });

  test('TLS with a self-signed certificate: require works, verify-full does not, and it expires soon', async () => {
    const expires = new Date(new X509Certificate(await readFile(certFile)).validTo).toISOString().slice(0, 10);
    const run = await doctor([url(tls)]);
    const check = run.check('tls');
    assert.equal(check.verdict, 'warn', check.found);
    assert.deepEqual(
      (check.data?.['modes'] as Array<{ mode: string; ok: boolean }>).map(({ mode, ok }) => [mode, ok]),
      [['disable', true], ['require', true], ['verify-full', false]],
    );
    assert.match(check.found, /only unverified TLS works/);
    assert.match(check.found, new RegExp(`expires on ${expires}, in [01] days?`));
    assert.match(check.found, /CN=localhost \(self-signed\)/);
    assert.match(check.advice, /--ca-file/);
    assert.match(check.advice, new RegExp(`renew the server certificate before ${expires}`));
    assert.match(run.check('auth').found, /sslmode=prefer: TLS, certificate not verified/);
    assert.equal(run.code, 0);
  });

  test('TLS with --ca-file and the name in the certificate: verify-full works, only the expiry warns', async () => {
    const run = await doctor([url({ host: 'localhost', port: tls.port }), '--ca-file', certFile]);
    const check = run.check('tls');
    assert.equal(check.data?.['hostnameMatches'], true, check.found);
    assert.deepEqual((check.data?.['modes'] as Array<{ ok: boolean }>).map((m) => m.ok), [true, true, true], check.found);
    assert.doesNotMatch(check.found, /only unverified/);
    assert.equal(check.verdict, 'warn');
    assert.match(check.advice, /renew/);
  });

  test('idle_session_timeout 2s with the default pool: timeouts fail and name the options to set', async () => {
    const run = await doctor([url(main, 'idle2')]);
    assert.equal(run.code, 1);
    const check = run.check('timeouts');
    assert.equal(check.verdict, 'fail');
    assert.match(check.found, /idle_session_timeout 2 s/);
    assert.match(check.found, /pg-lifeline defaults/);
    assert.match(check.advice, /idleTimeoutMillis: 1500 \(now 10000\)/);
    assert.match(check.advice, /keepaliveIntervalMillis: 1500 \(now 60000\)/);
    assert.match(check.advice, /maxLifetimeSeconds: 1\b/);
  });

  test('idle_session_timeout 2s with a pool that fits, from flags and from --config', async () => {
    const config = path.join(tmp, 'pool.mjs');
    await writeFile(config, `export const poolOptions = { connectionString: 'postgres://ignored:ignored@nowhere/db', idleTimeoutMillis: 1000, maxLifetimeSeconds: 1 };\n`);
    const [flags, module] = await Promise.all([
      doctor([url(main, 'idle2'), '--idle-timeout-ms', '1000', '--keepalive-ms', '1500', '--max-lifetime-s', '1']),
      doctor([url(main, 'idle2'), '--config', config]),
    ]);
    assert.equal(flags.check('timeouts').verdict, 'ok', flags.check('timeouts').found);
    assert.match(flags.check('timeouts').found, /pool \(flags and pg-lifeline defaults\): idleTimeoutMillis 1000, keepaliveIntervalMillis 1500/);
    assert.equal(module.check('timeouts').verdict, 'ok', module.check('timeouts').found);
    assert.match(module.check('timeouts').found, new RegExp(`pool \\(${config.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\): idleTimeoutMillis 1000`));
  });

  test('monitoring turned off without query_timeout: the dead-network bound warns', async () => {
    const config = path.join(tmp, 'no-monitor.mjs');
    await writeFile(config, 'export const poolOptions = { monitorGraceMillis: 0 };\n');
    const run = await doctor([url(main), '--config', config]);
    const check = run.check('timeouts');
    assert.equal(check.verdict, 'warn', check.found);
    assert.match(check.found, /monitoring is off .* waits for the OS/);
    assert.match(check.advice, /monitorGraceMillis at its default/);
    assert.equal(check.data?.['deadNetworkBoundMillis'], null);
  });

  test('max_connections 10 with 4 instances × max 10: headroom fails with a pool size that fits', async () => {
    const run = await doctor([url(small), '--instances', '4', '--max', '10']);
    assert.equal(run.code, 1);
    const check = run.check('headroom');
    assert.equal(check.verdict, 'fail');
    assert.match(check.found, /4 instances × max 10 = 40 connections; the server has 7 slots \(max_connections 10 − 3 superuser_reserved_connections\)/);
    assert.equal(check.data?.['recommendedMax'], 1);
    assert.match(check.advice, /set max: 1 \(or less\) per instance/);
  });

  test('--probe-idle finds the idle kill of idle_session_timeout 1500ms between 1 and 2 s', async () => {
    const run = await doctor([url(main, 'idle15'), '--probe-idle', '--probe-idle-max-s', '4']);
    const check = run.check('idle-probe');
    assert.deepEqual((check.data?.['probes'] as Array<{ seconds: number }>).map((p) => p.seconds), [1, 2, 4]);
    // The kill lands in the 2 s bucket; a very slow machine may see the 1 s probe's query arrive late and killed too.
    assert.ok([1, 2].includes(check.data?.['killedAfterSeconds'] as number), check.found);
    assert.equal(check.data?.['killedAfterSeconds'] === 2 ? check.data['aliveAfterSeconds'] : 1, 1, check.found);
    const diedAfter = check.data?.['diedAfterMs'] as number;
    // Measured on the client, so a loaded machine moves it either way: only that it fell inside the probe window.
    assert.ok(diedAfter > 0 && diedAfter < 4000, `died after ${diedAfter} ms`);
    assert.match(check.found, /killed after ~1\.\d s .*57P05.*idle_session_timeout/);
    assert.equal(check.verdict, 'fail'); // the default pool keeps idle connections 10 s
    assert.match(check.advice, /idleTimeoutMillis: \d+/);
  });

  test('usage: --help and --version exit 0; unknown options and commands exit 2 with the usage on stderr', async () => {
    const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const [help, doctorHelp, version, badOption, badCommand, badNumber, none] = await Promise.all([
      cli(['--help']),
      cli(['doctor', '--help']),
      cli(['--version']),
      cli(['doctor', '--bogus']),
      cli(['frobnicate']),
      cli(['doctor', '--instances', 'many']),
      cli([]),
    ]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: pg-lifeline <command>[\s\S]*doctor/);
    assert.equal(doctorHelp.code, 0);
    assert.match(doctorHelp.stdout, /--probe-idle-max-s/);
    assert.equal(version.code, 0);
    assert.equal(version.stdout.trim(), pkg.version);
    for (const run of [badOption, badCommand, badNumber, none]) {
      assert.equal(run.code, 2, run.stderr);
      assert.equal(run.stdout, '');
      assert.match(run.stderr, /Usage: pg-lifeline/);
    }
    assert.match(badOption.stderr, /Unknown option '--bogus'/);
    assert.match(badCommand.stderr, /unknown command "frobnicate"/);
    assert.match(badNumber.stderr, /--instances must be a whole number/);
  });
});

describe('pg-lifeline doctor through PgBouncer', { skip: noBouncer, concurrency: 2 }, () => {
  for (const mode of ['transaction', 'session'] as const) {
    test(`${mode} pooling: a proxy is detected, and its pooling mode`, async () => {
      const bouncer = await Bouncer.start(main, { poolMode: mode, defaultPoolSize: 5 });
      try {
        const run = await doctor([url(bouncer)]);
        const check = run.check('proxy');
        assert.equal(check.data?.['detected'], true, check.found);
        assert.equal(check.data?.['mode'], mode, check.found);
        assert.match(check.found, /a proxy is in between/);
        if (mode === 'transaction') {
          assert.equal(check.verdict, 'warn');
          assert.match(check.found, /transaction \(or statement\) pooling/);
          assert.match(check.advice, /SET LOCAL.*pg_advisory_xact_lock.*LISTEN/);
          assert.match(check.found, /LISTEN does not work here/);
          assert.equal(check.data?.['listen'], 'fails');
        } else {
          assert.equal(check.verdict, 'ok');
          assert.match(check.found, /probably session pooling/);
          assert.match(check.found, /LISTEN works, with pool\.listen\(channel, handler, \{ sessionPooler: true \}\)/);
          assert.match(check.advice, /default_pool_size/);
        }
        assert.equal(run.check('auth').verdict, 'ok');
        assert.equal(run.check('headroom').verdict, 'ok', run.check('headroom').found);
      } finally {
        await bouncer.destroy();
      }
    });
  }
});
