// Authentication and TLS against real servers, every case run with the same body on pg.Pool and on
// pg-lifeline's Pool: each way of giving the password (option, sync and async function, URL,
// PGPASSWORD, .pgpass) with SCRAM, md5 and a password full of URL-special characters, with verified
// TLS and without; then TLS verification itself, trust, and whether the password leaks. A wrong
// password must fail with 28P01 on both. This is the test that would have caught pg-lifeline's
// `password` option never reaching the server.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { inspect, promisify } from 'node:util';
import type pg from 'pg';
import { ConnectFailedError } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { target, url, WAYS, withEnv, type Env, type Login, type Setup } from './harness/auth-ways.js';
import { bounded, implementations } from './parity-shared.js';

type Impl = (typeof implementations)[number];

const PROBE = 'SELECT current_user AS "user", ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()';
/** SCRAM role whose password needs escaping in a URL, in SQL and in .pgpass. */
const SPECIAL: Login = { user: 'lifeline_special', password: "p@ss:w/rd?#%&+= \\'x" };
const CERT_CODES = ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'ERR_TLS_CERT_ALTNAME_INVALID'];

let tls: PgCluster; // scram-sha-256 + TLS from the test CA (the harness default)
let plain: PgCluster; // scram-sha-256, TLS off
let trust: PgCluster; // trust, TLS on
let dir: string; // pgpass files and the wrong CA
let wrongCaFile: string;
let seq = 0;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-auth-'));
  [tls, plain, trust] = await Promise.all([PgCluster.start(), PgCluster.start({ tls: false }), PgCluster.start({ auth: 'trust' })]);
  for (const cluster of [tls, plain]) await cluster.query(`CREATE ROLE ${SPECIAL.user} LOGIN PASSWORD '${SPECIAL.password.replace(/'/g, "''")}'`);
  // A CA that did not sign the server's certificate.
  wrongCaFile = path.join(dir, 'wrong-ca.crt');
  await promisify(execFile)('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'wrong-ca.key'), '-out', wrongCaFile, '-days', '1', '-subj', '/CN=not the pg-lifeline test CA', '-addext', 'basicConstraints=critical,CA:TRUE']);
});

after(async () => {
  await Promise.all([tls, plain, trust].map((cluster) => cluster?.destroy()));
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

// Every case starts with no password in the environment and no readable ~/.pgpass.
const clean = (): Env => ({ PGPASSWORD: undefined, PGPASSFILE: path.join(dir, 'no-such-pgpass') });

/** Makes a pool from `setup` in its environment, runs `body`, and always ends the pool. */
function withPool<T>(impl: Impl, setup: Setup, body: (pool: pg.Pool) => Promise<T>): Promise<T> {
  return withEnv({ ...clean(), ...setup.env }, async () => {
    const pool = impl.make({ ...setup.options, application_name: `auth-${process.pid}-${++seq}`, connectionTimeoutMillis: 10_000 });
    let failed = false;
    try {
      return await body(pool);
    } catch (error) {
      failed = true;
      throw error;
    } finally {
      const ended = bounded(pool.end(), 'pool.end()');
      await (failed ? ended.catch(() => undefined) : ended);
    }
  });
}

async function assertLogin(impl: Impl, setup: Setup, expected: { user: string; ssl: boolean }): Promise<void> {
  const rows = await withPool(impl, setup, async (pool) => (await pool.query(PROBE)).rows);
  assert.deepEqual(rows, [expected]);
}

/** The connect error of `setup`: it must fail on both pools. */
function failure(impl: Impl, setup: Setup): Promise<Error> {
  return withPool(impl, setup, (pool) =>
    pool.query(PROBE).then(
      () => assert.fail(`${impl.name} connected, but should have been refused`),
      (error: Error) => error,
    ),
  );
}

/**
 * pg.Pool rejects with pg's own error; pg-lifeline wraps it in a ConnectFailedError that keeps it as
 * `cause`, and keeps its code and the start of its message.
 */
function inner(impl: Impl, error: Error): Error & { code?: string } {
  if (impl.name === 'pg.Pool') return error;
  assert.ok(error instanceof ConnectFailedError, `expected a ConnectFailedError, got ${inspect(error)}`);
  assert.equal(error.lifelineCode, 'PGL_CONNECT_FAILED');
  const cause = error.cause as Error & { code?: string };
  assert.equal(error.code, cause.code ?? 'PGL_CONNECT_FAILED');
  assert.ok(error.message.startsWith(cause.message), error.message);
  return cause;
}

function assertWrongPassword(impl: Impl, error: Error, wrong: string): void {
  const cause = inner(impl, error);
  assert.equal(cause.code, '28P01', inspect(error));
  assert.match(cause.message, /password authentication failed for user/);
  if (error instanceof ConnectFailedError) assert.equal(error.sqlState, '28P01');
  assert.ok(!inspect(error, { depth: 6 }).includes(wrong), 'the refused password is not in the error');
}

function assertCertificateError(impl: Impl, error: Error): void {
  const cause = inner(impl, error);
  assert.ok(CERT_CODES.includes(cause.code ?? ''), `a certificate error code, got ${inspect(cause)}`);
  // Node's reason names the certificate; pg-lifeline adds what to do about it.
  assert.match(error.message, /certificate/i);
  if (error instanceof ConnectFailedError) assert.match(error.message, /TLS failed.*ssl\.ca, or sslrootcert/);
}

const LOGINS: { name: string; login: (c: PgCluster) => Login }[] = [
  { name: 'SCRAM (postgres)', login: (c) => ({ user: c.user, password: c.password }) },
  { name: 'md5 role', login: (c) => c.md5Role },
  { name: 'SCRAM, URL-special password', login: () => SPECIAL },
];
const SERVERS: { name: string; cluster: () => PgCluster; ssl: boolean }[] = [
  { name: 'verified TLS', cluster: () => tls, ssl: true },
  { name: 'no TLS', cluster: () => plain, ssl: false },
];

for (const impl of implementations) {
  describe(impl.name, { timeout: 60_000 }, () => {
    describe('ways of giving the password', () => {
      for (const way of WAYS) {
        for (const { name, login } of LOGINS) {
          for (const server of SERVERS) {
            test(`${way.name}, ${name}, ${server.name}: logs in; a wrong password is 28P01`, async () => {
              const cluster = server.cluster();
              const right = login(cluster);
              await assertLogin(impl, await way.setup(cluster, right, dir), { user: right.user, ssl: server.ssl });
              const wrong = { ...right, password: `wrong-${right.password}` };
              assertWrongPassword(impl, await failure(impl, await way.setup(cluster, wrong, dir)), wrong.password);
            });
          }
        }
      }
    });

    describe('TLS', () => {
      const login = (): Login => ({ user: tls.user, password: tls.password });
      test("ssl: { ca, servername: 'localhost' } with host localhost", () =>
        assertLogin(impl, { options: { ...tls.clientConfig(), host: 'localhost', ssl: { ca: tls.ca, servername: 'localhost' } } }, { user: 'postgres', ssl: true }));

      test('verify-full in a URL whose host is localhost', () =>
        assertLogin(impl, { options: { connectionString: url(tls, login(), tls.caFile, 'localhost') } }, { user: 'postgres', ssl: true }));

      test('ssl: { ca } of another CA fails with a certificate error', async () => {
        const ca = await readFile(wrongCaFile, 'utf8');
        assertCertificateError(impl, await failure(impl, { options: { ...tls.clientConfig(), ssl: { ca } } }));
      });

      test('sslmode=verify-full with sslrootcert of another CA fails with a certificate error', async () =>
        assertCertificateError(impl, await failure(impl, { options: { connectionString: url(tls, login(), wrongCaFile) } })));

      test('a servername the certificate does not name fails with a certificate error', async () => {
        const error = await failure(impl, { options: { ...tls.clientConfig(), ssl: { ca: tls.ca, servername: 'not-localhost.invalid' } } });
        assertCertificateError(impl, error);
        assert.equal(inner(impl, error).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
      });

      test('ssl: { ca } against a server without TLS is refused', async () => {
        const error = await failure(impl, { options: { ...plain.clientConfig(), ssl: { ca: tls.ca } } });
        assert.match(inner(impl, error).message, /does not support SSL/);
      });
    });

    describe('trust', () => {
      for (const [name, user] of [['postgres', () => trust.user], ['the md5 role', () => trust.md5Role.user]] as const) {
        test(`${name} logs in without any password`, () => assertLogin(impl, { options: target(trust, user()) }, { user: user(), ssl: true }));
      }
    });

    describe('the password does not leak', () => {
      test('pool.options.password stays readable, and is absent from inspect(pool) and JSON.stringify(pool.options) after use', async () => {
        const setup = { options: { ...target(tls, tls.user), password: tls.password } };
        await withPool(impl, setup, async (pool) => {
          await pool.query(PROBE);
          assert.equal(pool.options.password, tls.password);
          assert.ok(!inspect(pool, { depth: 8 }).includes(tls.password), 'inspect(pool)');
          assert.ok(!inspect(pool.options, { depth: 8 }).includes(tls.password), 'inspect(pool.options)');
          assert.ok(!JSON.stringify(pool.options).includes(tls.password), 'JSON.stringify(pool.options)');
        });
      });

      test('a password function is kept as given and never called just to show the options', async () => {
        let calls = 0;
        const provider = (): string => (calls++, tls.password);
        await withPool(impl, { options: { ...target(tls, tls.user), password: provider } }, async (pool) => {
          assert.equal(pool.options.password, provider);
          assert.ok(!inspect(pool, { depth: 8 }).includes(tls.password) && !JSON.stringify(pool.options).includes(tls.password));
          assert.equal(calls, 0);
        });
      });

      // pg.Pool hides `ssl.key` (a client certificate's private key) at construction, as it hides the
      // password. pg.Client hides it too, on the same object, so a pool only shows it before its first connect.
      test('ssl.key is absent from inspect(pool) and JSON.stringify(pool.options), as pg.Pool does', () =>
        withPool(impl, { options: { ...target(tls, tls.user), ssl: { ca: tls.ca, key: 'PRIVATE-KEY-MATERIAL' } } }, async (pool) => {
          assert.equal((pool.options.ssl as { key?: string }).key, 'PRIVATE-KEY-MATERIAL');
          assert.ok(!inspect(pool, { depth: 8 }).includes('PRIVATE-KEY-MATERIAL'), 'inspect(pool)');
          assert.ok(!JSON.stringify(pool.options).includes('PRIVATE-KEY-MATERIAL'), 'JSON.stringify(pool.options)');
        }));
    });
  });
}
