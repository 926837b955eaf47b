// `pg-lifeline doctor` arguments, read with util.parseArgs.
import { parseArgs } from 'node:util';

/** Bad arguments: the CLI prints the message (and the usage, unless told not to) on stderr and exits with 2. */
export class UsageError extends Error {
  readonly showUsage: boolean;
  constructor(message: string, showUsage = true) {
    super(message);
    this.showUsage = showUsage;
  }
}

export const DOCTOR_USAGE = `Usage: pg-lifeline doctor [connection string] [options]

Checks a PostgreSQL server, and your pool settings against it: reachability, login, TLS,
server timeouts, proxies (PgBouncer), connection headroom and restarts.

The connection string (a postgres:// URL or libpq key=value pairs) defaults to DATABASE_URL,
then to PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE and PGAPPNAME.

Options:
  --timeout-ms <ms>           bound for each connection and check (default 5000)
  --ca-file <file>            CA certificate(s) for sslmode verify-full
  --config <module>           a module whose \`poolOptions\` (or default) export is your Pool options
  --idle-timeout-ms <ms>      the pool's idleTimeoutMillis (default 10000)
  --keepalive-ms <ms>         the pool's keepaliveIntervalMillis (default 60000)
  --max-lifetime-s <s>        the pool's maxLifetimeSeconds (default 1800)
  --instances <n>             app instances sharing the server (default 1)
  --max <n>                   pool size per instance (default 10, or max from --config)
  --probe-idle                hold idle connections for 1, 2, 4, ... s to find idle kills
  --probe-idle-max-s <s>      longest idle probe (default 60)
  --json                      print one JSON object instead of text
  -h, --help                  show this help

Exit status: 0 when no check fails, 1 when one does, 2 for bad arguments.
`;

export interface DoctorArgs {
  connection: string | undefined;
  timeoutMs: number;
  caFile: string | undefined;
  config: string | undefined;
  idleTimeoutMillis: number | undefined;
  keepaliveIntervalMillis: number | undefined;
  maxLifetimeSeconds: number | undefined;
  instances: number;
  max: number | undefined;
  probeIdleMaxS: number | undefined;
  json: boolean;
  help: boolean;
}

function number(flag: string, value: string | undefined, lo: number, hi: number, integer = true): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < lo || n > hi || (integer && !Number.isInteger(n))) {
    throw new UsageError(`--${flag} must be ${integer ? 'a whole number' : 'a number'} from ${lo} to ${hi}, not ${JSON.stringify(value)}`);
  }
  return n;
}

export function parseDoctorArgs(argv: string[]): DoctorArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        'timeout-ms': { type: 'string' },
        'ca-file': { type: 'string' },
        config: { type: 'string' },
        'idle-timeout-ms': { type: 'string' },
        'keepalive-ms': { type: 'string' },
        'max-lifetime-s': { type: 'string' },
        instances: { type: 'string' },
        max: { type: 'string' },
        'probe-idle': { type: 'boolean' },
        'probe-idle-max-s': { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    // parseArgs adds a long hint about '--' after the first sentence.
    throw new UsageError((error as Error).message.split('. ')[0] ?? String(error));
  }
  const { values: v, positionals } = parsed;
  if (positionals.length > 1) throw new UsageError(`expected at most one connection string, got ${positionals.length} arguments`);
  const probeMax = number('probe-idle-max-s', v['probe-idle-max-s'], 1, 3600);
  return {
    connection: positionals[0],
    timeoutMs: number('timeout-ms', v['timeout-ms'], 100, 600_000) ?? 5000,
    caFile: v['ca-file'],
    config: v.config,
    idleTimeoutMillis: number('idle-timeout-ms', v['idle-timeout-ms'], 0, 2_147_483_647),
    keepaliveIntervalMillis: number('keepalive-ms', v['keepalive-ms'], 0, 2_147_483_647),
    maxLifetimeSeconds: number('max-lifetime-s', v['max-lifetime-s'], 0, 2_147_483, false),
    instances: number('instances', v.instances, 1, 100_000) ?? 1,
    max: number('max', v.max, 1, 100_000),
    // --probe-idle-max-s alone turns the probe on too.
    probeIdleMaxS: v['probe-idle'] || probeMax !== undefined ? (probeMax ?? 60) : undefined,
    json: v.json ?? false,
    help: v.help ?? false,
  };
}
