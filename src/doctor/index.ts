// `pg-lifeline doctor`: runs the checklist against one server, each check within its own deadline.
import { DOCTOR_USAGE, parseDoctorArgs, UsageError } from './args.js';
import { checkAuth, checkTcp, reachability } from './connect.js';
import { checkHeadroom } from './headroom.js';
import { loadPoolConfig, PoolConfigError, poolNumbers } from './pool-config.js';
import { checkProbeIdle } from './probe-idle.js';
import { checkProxy } from './proxy.js';
import { formatJson, formatText, useColour, type Report } from './report.js';
import { checkRestarts } from './restarts.js';
import { endpoint, loadCa, maskedUrl, resolveSettings, scrub, SettingsError } from './settings.js';
import { checkTimeouts } from './timeouts.js';
import { checkTls } from './tls.js';
import { Conn, describeError, withTimeout, type CheckResult, type DoctorContext } from './util.js';

export { DOCTOR_USAGE, UsageError };

interface Step {
  name: string;
  /** Whether it runs on the main session (the idle probe opens its own connections). */
  session: boolean;
  run: (ctx: DoctorContext) => Promise<CheckResult>;
  /** The check's deadline beyond --timeout-ms, for the time it spends on purpose. */
  extraMs: (ctx: DoctorContext) => number;
}

// Checks that need a logged-in session, in report order after reachability and login.
const SESSION_STEPS: Step[] = [
  { name: 'tls', session: false, run: checkTls, extraMs: () => 1000 },
  { name: 'timeouts', session: true, run: checkTimeouts, extraMs: () => 500 },
  { name: 'proxy', session: true, run: checkProxy, extraMs: (ctx) => ctx.timeoutMs + 3000 },
  { name: 'headroom', session: true, run: checkHeadroom, extraMs: () => 500 },
  { name: 'restarts', session: true, run: checkRestarts, extraMs: () => 500 },
];
const PROBE_STEP: Step = { name: 'idle-probe', session: false, run: checkProbeIdle, extraMs: (ctx) => (ctx.probeIdleMaxS ?? 60) * 1000 + ctx.timeoutMs * 2 + 1000 };

/** Runs one check within `ms`; a check that throws or overruns fails with what happened. */
async function guarded(name: string, ms: number, run: () => Promise<CheckResult>): Promise<CheckResult> {
  try {
    return await withTimeout(run(), ms, `the ${name} check`);
  } catch (error) {
    return {
      name,
      verdict: 'fail',
      found: `the check could not finish: ${describeError(error)}`,
      advice: 'look at the message; if the server is just slow, raise --timeout-ms',
    };
  }
}

async function buildContext(argv: string[], env: NodeJS.ProcessEnv): Promise<{ ctx: DoctorContext; json: boolean } | 'help'> {
  const args = parseDoctorArgs(argv);
  if (args.help) return 'help';
  try {
    const settings = resolveSettings(args.connection, env);
    const config = args.config !== undefined ? await loadPoolConfig(args.config) : undefined;
    const flags = {
      ...(args.idleTimeoutMillis !== undefined ? { idleTimeoutMillis: args.idleTimeoutMillis } : {}),
      ...(args.keepaliveIntervalMillis !== undefined ? { keepaliveIntervalMillis: args.keepaliveIntervalMillis } : {}),
      ...(args.maxLifetimeSeconds !== undefined ? { maxLifetimeSeconds: args.maxLifetimeSeconds } : {}),
      ...(args.max !== undefined ? { max: args.max } : {}),
    };
    const ctx: DoctorContext = {
      settings,
      timeoutMs: args.timeoutMs,
      ca: loadCa(settings, args.caFile),
      pool: poolNumbers(config, args.config, flags),
      instances: args.instances,
      probeIdleMaxS: args.probeIdleMaxS,
    };
    return { ctx, json: args.json };
  } catch (error) {
    if (error instanceof SettingsError || error instanceof PoolConfigError) throw new UsageError(error.message, false);
    throw error;
  }
}

async function runChecks(ctx: DoctorContext): Promise<Pick<Report, 'checks' | 'skipped'>> {
  const checks: CheckResult[] = [];
  const skipped: Report['skipped'] = [];
  const steps = [...SESSION_STEPS, ...(ctx.probeIdleMaxS !== undefined ? [PROBE_STEP] : [])];
  const skipAll = (reason: string, from: Step[]): void => {
    for (const step of from) skipped.push({ name: step.name, reason });
  };
  const tcp = await checkTcp(ctx);
  if ('name' in tcp) {
    checks.push(tcp);
    skipped.push({ name: 'auth', reason: 'the server cannot be reached' });
    skipAll('the server cannot be reached', steps);
    return { checks, skipped };
  }
  const auth = await guarded('auth', ctx.timeoutMs * 3 + 1000, () => checkAuth(ctx));
  checks.push(await guarded('reachability', ctx.timeoutMs + 500, () => reachability(ctx, tcp.ms)));
  checks.push(auth);
  if (!ctx.main) {
    skipAll('the login failed', steps);
    return { checks, skipped };
  }
  try {
    for (const step of steps) {
      const lost = step.session ? await ensureSession(ctx) : undefined;
      if (lost !== undefined) skipped.push({ name: step.name, reason: lost });
      else checks.push(await guarded(step.name, ctx.timeoutMs + step.extraMs(ctx), () => step.run(ctx)));
    }
  } finally {
    await ctx.main?.close();
  }
  return { checks, skipped };
}

/**
 * Opens the main session again if it ended (an idle_session_timeout shorter than a check, say).
 * Returns why it could not, or undefined when the session is usable.
 */
async function ensureSession(ctx: DoctorContext): Promise<string | undefined> {
  const main = ctx.main;
  if (main && main.endedAt === undefined) return undefined;
  const why = main?.endError ? describeError(main.endError) : 'closed';
  try {
    const conn = await Conn.open(ctx.settings, ctx.ssl ?? false, ctx.timeoutMs);
    ctx.main = conn;
    ctx.backendPid = (await conn.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))[0]?.pid;
    return undefined;
  } catch (error) {
    return `the session ended (${why}) and reconnecting failed: ${describeError(error)}`;
  }
}

/** `pg-lifeline doctor [connection string] [options]`; resolves to the exit code. */
export async function runDoctor(argv: string[]): Promise<number> {
  const built = await buildContext(argv, process.env);
  if (built === 'help') {
    process.stdout.write(DOCTOR_USAGE);
    return 0;
  }
  const { ctx, json } = built;
  const s = ctx.settings;
  // A backstop over the per-check deadlines: whatever happens, the run ends.
  const budget = ctx.timeoutMs * 16 + 15_000 + (ctx.probeIdleMaxS ?? 0) * 1000;
  const watchdog = setTimeout(() => {
    process.stderr.write(`pg-lifeline doctor: gave up after ${Math.round(budget / 1000)} s\n`);
    process.exit(1);
  }, budget);
  watchdog.unref();

  const { checks, skipped } = await runChecks(ctx);
  clearTimeout(watchdog);
  const notes = s.otherHosts.length ? [`multi-host string: only the first host (${endpoint(s)}) was checked; run again for ${s.otherHosts.join(', ')}`] : [];
  const report: Report = { ok: !checks.some((c) => c.verdict === 'fail'), target: maskedUrl(s), source: s.source, notes, checks, skipped };
  const text = json ? formatJson(report) : formatText(report, useColour(process.stdout, process.env));
  process.stdout.write(scrub(text, s));
  return report.ok ? 0 : 1;
}
