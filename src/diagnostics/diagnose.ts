import { sqlStateOf } from '../errors.js';
import { classifyFailure } from '../postgres/classify.js';
import type { ServerSettings } from './server-settings.js';
import { SilentConnectionError, silenceSummary } from '../postgres/silence.js';

/** Why a connection was lost, as far as the pool can tell at the moment it happened. */
export type LossCause =
  | 'idle-timeout-server'
  | 'idle-timeout-proxy-or-network'
  | 'server-restart'
  | 'server-crash'
  | 'admin-terminated'
  | 'network'
  | 'tls'
  | 'too-many-connections'
  | 'auth'
  | 'client-released'
  | 'pool-ended'
  | 'unknown';

/** What the pool knew about a connection when it failed. */
export interface DiagnosisFacts {
  /** Milliseconds since the connection was opened. */
  readonly ageMillis: number;
  /** Milliseconds it had sat idle (before its checkout, or until it died while idle). */
  readonly idleMillis: number;
  /** `host:port` of its server. */
  readonly host?: string | undefined;
  /** The server's timeouts, read at the first connection to it. */
  readonly server?: ServerSettings | undefined;
  /** An idle age at which connections keep dying with nothing on the server to explain it. */
  readonly learnedIdleKillMillis?: number | undefined;
}

/** A failure explained: the facts, the likely cause, and what to do. */
export interface Diagnosis extends DiagnosisFacts {
  readonly cause: LossCause;
  /** What happened and why, in a sentence. */
  readonly summary: string;
  /** What to do about it. */
  readonly advice: string;
}

// With a password provider, a token refused even after the pool fetched a fresh one has these usual causes.
const PROVIDER_AUTH_HINT =
  '; with a password provider (IAM, Entra ID): an expired token, a token signed for another host or port than the one ' +
  'connected to, a clock skewed from the token service, or TLS missing (IAM logins require ssl); see docs/credentials.md';

// An idle connection that dies silently after this long most likely met an idle timeout on a NAT,
// load balancer or proxy: they commonly cut flows idle for 60 s to 60 min.
const LONG_IDLE_MILLIS = 30_000;

/** Explains `error`, which ended a connection described by `facts`. */
export function diagnose(error: unknown, facts: DiagnosisFacts): Diagnosis {
  const [cause, summary, advice] = explain(error, facts);
  return Object.freeze({ ...facts, cause, summary, advice });
}

function explain(error: unknown, facts: DiagnosisFacts): [LossCause, string, string] {
  const idle = `${duration(facts.idleMillis)} idle`;
  const server = facts.server;
  const e = error as { code?: unknown; lifelineCode?: unknown } | null;
  const code = e?.lifelineCode ?? e?.code;
  if (code === 'PGL_CLIENT_RELEASED') return ['client-released', 'the app used a client after releasing it', 'keep each use between connect() and release(), or use pool.withClient'];
  if (code === 'PGL_POOL_ENDED') return ['pool-ended', 'the pool had been ended', 'stop using the pool before calling end()'];
  if (error instanceof SilentConnectionError) {
    return [
      'network',
      silenceSummary(error.verdict, error.silentMillis, facts.host ?? 'the server'),
      'nothing in the app if it is rare (the pool cut the connection off and reconnects); if it repeats, check the network path to the server',
    ];
  }
  const state = sqlStateOf(error);
  if (state === '57P05') {
    const limit = server?.idleSessionTimeoutMillis;
    return [
      'idle-timeout-server',
      `the server ended the session after ${idle}${limit ? `: its idle_session_timeout is ${duration(limit)}` : ' (idle_session_timeout)'}`,
      `keep keepaliveIntervalMillis below ${limit ? `${limit} ms` : 'that timeout'} (pg-lifeline does so by itself once it has read the setting), or raise idle_session_timeout`,
    ];
  }
  if (state === '25P03') {
    const limit = server?.idleInTransactionSessionTimeoutMillis;
    return [
      'idle-timeout-server',
      `a transaction sat idle longer than the server's idle_in_transaction_session_timeout${limit ? ` (${duration(limit)})` : ''}`,
      'commit or roll back promptly; do not keep a transaction open while awaiting other work',
    ];
  }
  if (state === '57P02' || (error instanceof Error && /crash of another server process/.test(error.message))) {
    return ['server-crash', 'the server restarted every session after one of its processes crashed', 'nothing in the app (the pool reconnected); look for the crash in the server log'];
  }
  if (state === '57P03') return ['server-restart', 'the server was starting up or shutting down', 'nothing in the app: the pool waits for the server to accept connections again'];
  if (state === '57P01') {
    return [
      'admin-terminated',
      'the server ended the session on an administrator command (pg_terminate_backend) or a fast shutdown',
      'if the server restarted, nothing (the pool reconnected); otherwise find who terminates backends (log_disconnections, pg_stat_activity)',
    ];
  }
  const kind = classifyFailure(error);
  if (kind === 'too-many-connections') return ['too-many-connections', 'the server has no connection slots left (max_connections)', 'lower max across app instances, raise max_connections, or put PgBouncer in front'];
  if (kind === 'auth' || kind === 'no-database') return ['auth', 'the server refused the login', `check the user, password and database name${kind === 'auth' ? PROVIDER_AUTH_HINT : ''}`];
  if (kind === 'tls') return ['tls', 'the TLS connection failed or was cut', 'check the certificate, its expiry and the sslmode; run pg-lifeline doctor'];
  if (kind === 'unreachable') return ['server-restart', `nothing accepted the connection${facts.host ? ` at ${facts.host}` : ''}: the server is down, restarting, or unreachable`, 'the pool retries with backoff; check the server and the network if it lasts'];
  if (kind === 'query-timeout') return ['network', 'the statement outlived query_timeout: it is slow, or the network to the server went silent', 'raise query_timeout for slow statements; run pg-lifeline doctor --probe-idle to look for a network that drops flows'];
  if (error instanceof Error && /SSL|TLS/.test(error.message)) return ['tls', 'the TLS session was closed unexpectedly, usually by a proxy or the server dropping the connection', 'if it repeats, check what sits between the app and the server, and run pg-lifeline doctor'];
  if (kind !== 'connection-lost') return ['unknown', 'the connection failed', 'see the cause for details'];
  // No word from the server: the socket closed or reset under us.
  const serverLimit = server?.idleSessionTimeoutMillis ?? 0;
  if (serverLimit > 0 && facts.idleMillis >= serverLimit * 0.9) {
    return ['idle-timeout-server', `connection lost after ${idle}; the server's idle_session_timeout is ${duration(serverLimit)}`, `keep keepaliveIntervalMillis below ${serverLimit} ms, or idleTimeoutMillis below ${serverLimit}, to avoid the reconnect`];
  }
  const learned = facts.learnedIdleKillMillis;
  if (learned !== undefined && facts.idleMillis >= learned * 0.9) {
    return [
      'idle-timeout-proxy-or-network',
      `connection lost after ${idle}; idle connections keep dying at about ${duration(learned)} idle, and nothing on the server explains it: a proxy, load balancer or NAT idle timeout`,
      `keep keepaliveIntervalMillis below ${learned} ms (pg-lifeline does so by itself), or raise that device's idle timeout`,
    ];
  }
  if (facts.idleMillis >= LONG_IDLE_MILLIS) {
    return [
      'idle-timeout-proxy-or-network',
      `connection lost after ${idle} with no word from the server: most likely a proxy, load balancer or NAT idle timeout`,
      'lower keepaliveIntervalMillis below that idle timeout; pg-lifeline doctor --probe-idle finds it',
    ];
  }
  return ['network', `connection lost after ${duration(facts.ageMillis)} open and ${idle}, with no word from the server: the network or the server dropped it`, 'if this repeats, run pg-lifeline doctor to check the network and the server'];
}

function duration(millis: number): string {
  return millis < 1000 ? `${Math.round(millis)} ms` : `${Math.round(millis / 1000)} s`;
}
