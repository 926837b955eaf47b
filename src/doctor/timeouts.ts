// Check 4: the server's session timeouts against the pool's idle timeout, keepalive pings and lifetime.
import { formatMs, formatSetting, safelyBelow, worst, type CheckResult, type DoctorContext, type Verdict } from './util.js';

const NAMES = [
  'idle_session_timeout',
  'idle_in_transaction_session_timeout',
  'statement_timeout',
  'tcp_keepalives_idle',
  'tcp_keepalives_interval',
  'tcp_keepalives_count',
] as const;
type Name = (typeof NAMES)[number];

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** The settings in milliseconds (counts as they are); absent ones (older servers) are missing. */
export async function readServerTimeouts(ctx: DoctorContext): Promise<Partial<Record<Name, number>>> {
  if (!ctx.main) return {};
  const rows = await ctx.main.query<{ name: Name; setting: string; unit: string | null }>(
    'SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])',
    [[...NAMES]],
  );
  const out: Partial<Record<Name, number>> = {};
  for (const row of rows) out[row.name] = Number(row.setting) * (row.unit ? (UNIT_MS[row.unit] ?? 1) : 1);
  return out;
}

const ms = (value: number): string => (value === 0 ? '0 (never)' : String(value));

export async function checkTimeouts(ctx: DoctorContext): Promise<CheckResult> {
  const server = await readServerTimeouts(ctx);
  const pool = ctx.pool;
  const ist = server.idle_session_timeout;
  const idle = pool.idleTimeoutMillis || Infinity;
  const keepalive = pool.keepaliveIntervalMillis || Infinity;
  const lifetime = pool.maxLifetimeSeconds * 1000 || Infinity;
  // The longest a pooled connection can sit idle without the server hearing from it: connections
  // above `min` are closed after idleTimeoutMillis or pinged, whichever comes first; `min` ones are only pinged.
  const idleBound = pool.min > 0 ? keepalive : Math.min(idle, keepalive);
  const proxied = ctx.main !== undefined && ctx.main.processID !== ctx.backendPid;

  const keepalives = [server.tcp_keepalives_idle, server.tcp_keepalives_interval, server.tcp_keepalives_count];
  const found = [
    `server: idle_session_timeout ${formatSetting(ist)}, idle_in_transaction_session_timeout ${formatSetting(server.idle_in_transaction_session_timeout)}, ` +
      `statement_timeout ${formatSetting(server.statement_timeout)}, tcp_keepalives idle/interval/count ` +
      keepalives.map((v, i) => (v === undefined ? 'n/a' : v === 0 ? 'OS default' : i < 2 ? formatMs(v) : String(v))).join('/'),
    `pool (${pool.source}): idleTimeoutMillis ${ms(pool.idleTimeoutMillis)}, keepaliveIntervalMillis ${ms(pool.keepaliveIntervalMillis)}, ` +
      `maxLifetimeSeconds ${ms(pool.maxLifetimeSeconds)}, min ${pool.min}`,
  ];
  const verdicts: Verdict[] = ['ok'];
  const advice: string[] = [];
  const deadNetwork = deadNetworkBound(pool);
  found.push(deadNetwork.found);
  if (deadNetwork.advice !== undefined) {
    verdicts.push('warn');
    advice.push(deadNetwork.advice);
  }
  if (proxied && pool.monitorGraceMillis > 0) found.push('behind a proxy the monitor can only tell whether the proxy answers, not whether each backend is alive');
  if (ist === undefined) {
    found.push('idle_session_timeout does not exist on this server (before PostgreSQL 14)');
  } else if (ist > 0) {
    const target = safelyBelow(ist);
    if (idleBound >= ist) {
      verdicts.push(proxied ? 'warn' : 'fail');
      found.push(`pooled connections can sit idle ${formatMs(idleBound)}, longer than the server's ${formatMs(ist)} idle_session_timeout: the server will end them`);
      advice.push(
        pool.min > 0
          ? `set keepaliveIntervalMillis: ${target} (now ${ms(pool.keepaliveIntervalMillis)}): the ${pool.min} min connections are never closed for idleness, so pings must come more often than every ${formatMs(ist)}`
          : `set idleTimeoutMillis: ${target} (now ${ms(pool.idleTimeoutMillis)}) so the pool closes idle connections before the server does, or keepaliveIntervalMillis: ${target} (now ${ms(pool.keepaliveIntervalMillis)}) to keep them alive with pings`,
      );
    } else if (idleBound > ist * 0.9) {
      verdicts.push('warn');
      found.push(`pooled connections can sit idle ${formatMs(idleBound)}, close to the server's ${formatMs(ist)} idle_session_timeout`);
      advice.push(`leave a margin: set ${pool.min > 0 || keepalive <= idle ? 'keepaliveIntervalMillis' : 'idleTimeoutMillis'}: ${target}`);
    }
    if (lifetime > ist) {
      verdicts.push('warn');
      found.push(`maxLifetimeSeconds ${ms(pool.maxLifetimeSeconds)} outlives idle_session_timeout ${formatMs(ist)}`);
      advice.push(
        `a connection unused for ${formatMs(ist)} is ended by the server before it retires${idleBound < ist ? ' (the idle settings above prevent that)' : ''}; ` +
          `to retire connections first, set maxLifetimeSeconds: ${Math.max(1, Math.floor(target / 1000))}`,
      );
    }
    if (proxied) {
      found.push('behind a proxy, this server timeout applies to the proxy’s own server connections');
      advice.push("compare the pool with the proxy's client idle timeout too (PgBouncer: client_idle_timeout)");
    }
  }
  return {
    name: 'timeouts',
    verdict: worst(verdicts),
    found: found.join('; '),
    advice: advice.join('; ') || 'nothing to do',
    data: { server, pool: { ...pool }, poolIdleBoundMillis: Number.isFinite(idleBound) ? idleBound : null, deadNetworkBoundMillis: deadNetwork.boundMillis },
  };
}

// The maintenance loop looks at statements in flight about once a second.
const TICK_MILLIS = 1000;

/** How long a statement in flight can hang on a dead network with these pool settings. */
function deadNetworkBound(pool: DoctorContext['pool']): { found: string; advice?: string; boundMillis: number | null } {
  const cap = pool.query_timeout > 0 ? pool.query_timeout : Infinity;
  if (pool.monitorGraceMillis === 0) {
    if (Number.isFinite(cap)) return { found: `dead network: monitoring is off; query_timeout bounds each statement at ${formatMs(cap)}`, boundMillis: cap };
    return {
      found: 'dead network: monitoring is off (monitorGraceMillis 0) and query_timeout is 0, so a statement on a dead network waits for the OS (about 15 min)',
      advice: 'leave monitorGraceMillis at its default (2000), or set query_timeout',
      boundMillis: null,
    };
  }
  const bound = Math.min(cap, pool.monitorGraceMillis + pool.monitorDetectionMillis + TICK_MILLIS);
  return {
    found: `dead network: a statement in flight settles within about ${formatMs(bound)} (monitorGraceMillis ${pool.monitorGraceMillis} + monitorDetectionMillis ${pool.monitorDetectionMillis}${Number.isFinite(cap) ? `, query_timeout ${pool.query_timeout}` : ''})`,
    boundMillis: bound,
  };
}
