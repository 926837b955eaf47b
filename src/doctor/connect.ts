// Checks 1 and 2: can we reach the server (TCP, then query round trips), and can we log in.
import { connect } from 'node:net';
import { endpoint, isUnixSocket, sslOption, variantsFor, type ConnSettings, type TlsVariant } from './settings.js';
import { Conn, describeError, formatMs, median, sqlState, type CheckResult, type DoctorContext } from './util.js';

const ROUND_TRIPS = 5;
const SLOW_ROUND_TRIP_MS = 100;

/** Milliseconds to open a TCP connection (or the Unix socket), bounded by `timeoutMs`. */
export function tcpConnectTime(s: ConnSettings, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = isUnixSocket(s) ? connect({ path: endpoint(s) }) : connect({ host: s.host, port: s.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`no answer within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(performance.now() - started);
    });
    socket.on('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    });
  });
}

function tcpAdvice(code: string | undefined, s: ConnSettings): string {
  switch (code) {
    case 'ECONNREFUSED':
      return `nothing listens on ${endpoint(s)}: check that the server runs, the port, and that listen_addresses includes this interface`;
    case 'ENOENT':
      return `no socket at ${endpoint(s)}: check that the server runs and its unix_socket_directories`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `the host name ${s.host} does not resolve: check the host and DNS`;
    case 'ETIMEDOUT':
      return 'no answer: a firewall or security group drops the packets, or the host is down; check the route and the allowed sources';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `no route to ${s.host}: check the network (VPN, VPC peering, routes)`;
    default:
      return 'check the host, the port and the network between here and the server';
  }
}

export async function checkTcp(ctx: DoctorContext): Promise<{ ms: number } | CheckResult> {
  const s = ctx.settings;
  try {
    return { ms: await tcpConnectTime(s, ctx.timeoutMs) };
  } catch (error) {
    const code = (error as { code?: string }).code;
    return {
      name: 'reachability',
      verdict: 'fail',
      found: `cannot connect to ${endpoint(s)}: ${describeError(error)}`,
      advice: tcpAdvice(code, s),
      data: { endpoint: endpoint(s), error: code ?? describeError(error) },
    };
  }
}

/** The reachability result once a session is open: TCP time plus the median `SELECT 1` round trip. */
export async function reachability(ctx: DoctorContext, tcpMs: number): Promise<CheckResult> {
  const where = endpoint(ctx.settings);
  const tcp = `${isUnixSocket(ctx.settings) ? 'socket' : 'TCP'} connect to ${where} in ${formatMs(tcpMs)}`;
  if (!ctx.main) {
    return { name: 'reachability', verdict: 'ok', found: `${tcp}; round trips not measured (no login)`, advice: 'fix the login first', data: { tcpConnectMs: tcpMs } };
  }
  const samples: number[] = [];
  for (let i = 0; i < ROUND_TRIPS; i++) {
    const started = performance.now();
    await ctx.main.query('SELECT 1');
    samples.push(performance.now() - started);
  }
  const rtt = median(samples);
  const slow = rtt > SLOW_ROUND_TRIP_MS;
  return {
    name: 'reachability',
    verdict: slow ? 'warn' : 'ok',
    found: `${tcp}; SELECT 1 round trip ${formatMs(rtt)} (median of ${ROUND_TRIPS})`,
    advice: slow
      ? `every statement pays ${formatMs(rtt)} before it runs: run the app in the same region/zone as the database, and batch round trips`
      : 'nothing to do',
    data: { endpoint: where, tcpConnectMs: tcpMs, roundTripMs: rtt, samplesMs: samples },
  };
}

// A short-lived token (RDS IAM, Entra ID) is refused as a wrong password; these are its usual causes.
const TOKEN_HINT =
  '. If it is a token (RDS IAM, Entra ID): it may have expired, be signed for another host or port than this one, ' +
  'be judged against a skewed clock, or need TLS (IAM logins require sslmode=require or better); see docs/credentials.md';

function authAdvice(error: unknown, s: ConnSettings): string {
  const state = sqlState(error);
  const message = describeError(error);
  switch (state) {
    case '28P01':
      return `the password for role "${s.user}" is wrong: check the URL's password, PGPASSWORD or ~/.pgpass${TOKEN_HINT}`;
    case '28000':
      if (/no pg_hba\.conf entry/i.test(message)) {
        return /no encryption/i.test(message)
          ? 'the server only accepts this login over TLS: use sslmode=require (better verify-full)'
          : `no pg_hba.conf line lets "${s.user}" in to "${s.database}" from here: add one (host/hostssl … scram-sha-256) and reload`;
      }
      return `the server refused role "${s.user}": check that the role exists (CREATE ROLE ${s.user} LOGIN) and its pg_hba.conf line`;
    case '3D000':
      return `database "${s.database}" does not exist: create it (CREATE DATABASE "${s.database}") or fix the database name`;
    case '53300':
      return 'the server is out of connection slots: close idle sessions, lower pool sizes, or raise max_connections';
    case '57P03':
      return 'the server is starting up or shutting down: try again in a moment';
    case '08P01':
      return 'a proxy (PgBouncer?) refused the login: check its [databases] entry, auth_file/auth_query and ignore_startup_parameters';
    default:
      if (/SSL|TLS|certificate|self.signed/i.test(message)) return 'TLS failed: check sslmode and the CA (--ca-file / sslrootcert)';
      if ((error as { code?: string }).code === 'ETIMEDOUT' || /timeout/i.test(message)) {
        return 'the server accepted TCP but did not finish the login in time: is it overloaded, or is a proxy in the way?';
      }
      return 'check the user, password, database and sslmode';
  }
}

/** Whether a failed attempt in `prefer`/`allow` mode should fall back to the next variant. */
function fallsBack(error: unknown): boolean {
  return sqlState(error) === '28000' || /does not support SSL|error establishing an SSL/i.test(describeError(error));
}

/** Check 2: logs in with the user's sslmode; on success the session is kept in `ctx.main`. */
export async function checkAuth(ctx: DoctorContext): Promise<CheckResult> {
  const s = ctx.settings;
  let failure: unknown;
  const variants = variantsFor(s);
  for (const [i, variant] of variants.entries()) {
    const ssl = sslOption(variant, ctx.ca);
    try {
      const conn = await Conn.open(s, ssl, ctx.timeoutMs);
      ctx.main = conn;
      ctx.variant = variant;
      ctx.ssl = ssl;
      break;
    } catch (error) {
      failure ??= error;
      if (i < variants.length - 1 && fallsBack(error)) continue;
      if (i > 0) failure = error;
      break;
    }
  }
  const who = `as "${s.user}" to database "${s.database}"`;
  if (!ctx.main) {
    return {
      name: 'auth',
      verdict: 'fail',
      found: `login ${who} failed: ${describeError(failure)}`,
      advice: authAdvice(failure, s),
      data: { sqlState: sqlState(failure) ?? null, message: describeError(failure) },
    };
  }
  const rows = await ctx.main.query<{ version: string; pid: number; superuser: string }>(
    "SELECT split_part(current_setting('server_version'), ' ', 1) AS version, pg_backend_pid() AS pid, current_setting('is_superuser') AS superuser",
  );
  const row = rows[0];
  ctx.backendPid = row?.pid;
  const tls = describeVariant(ctx.variant);
  return {
    name: 'auth',
    verdict: 'ok',
    found: `logged in ${who} (PostgreSQL ${row?.version ?? '?'}${row?.superuser === 'on' ? ', superuser' : ''}; sslmode=${s.sslmode}: ${tls})`,
    advice: row?.superuser === 'on' ? 'an app should not log in as a superuser: give it its own role with only the rights it needs' : 'nothing to do',
    data: { serverVersion: row?.version ?? null, superuser: row?.superuser === 'on', tls: ctx.variant ?? null },
  };
}

function describeVariant(variant: TlsVariant | undefined): string {
  switch (variant) {
    case 'disable':
    case undefined:
      return 'no TLS';
    case 'require':
      return 'TLS, certificate not verified';
    case 'verify-ca':
      return 'TLS, CA verified';
    case 'verify-full':
      return 'TLS, certificate and host name verified';
  }
}
