// Check 7: when the server last started, and when it last loaded its configuration.
import { formatMs, type CheckResult, type DoctorContext } from './util.js';

const RECENT_MS = 3_600_000;

export async function checkRestarts(ctx: DoctorContext): Promise<CheckResult> {
  if (!ctx.main) throw new Error('no session');
  const [row] = await ctx.main.query<{ started: Date; loaded: Date; up_ms: number; loaded_ms: number; standby: boolean }>(
    `SELECT pg_postmaster_start_time() AS started, pg_conf_load_time() AS loaded,
            (extract(epoch FROM now() - pg_postmaster_start_time()) * 1000)::float8 AS up_ms,
            (extract(epoch FROM now() - pg_conf_load_time()) * 1000)::float8 AS loaded_ms,
            pg_is_in_recovery() AS standby`,
  );
  if (!row) throw new Error('no answer');
  const started = new Date(row.started).toISOString();
  const loaded = new Date(row.loaded).toISOString();
  const reloaded = row.up_ms - row.loaded_ms > 1000;
  const found =
    `up ${formatMs(row.up_ms)} (started ${started})${row.standby ? ', a standby (in recovery)' : ''}; ` +
    `configuration ${reloaded ? `reloaded ${formatMs(row.loaded_ms)} ago (${loaded})` : 'loaded at start, not reloaded since'}`;
  const recent = row.up_ms < RECENT_MS;
  return {
    name: 'restarts',
    verdict: recent ? 'warn' : 'ok',
    found: recent ? `restarted ${formatMs(row.up_ms)} ago: ${found}` : found,
    advice: recent
      ? "if that was not planned, look in the server's log for a crash, an out-of-memory kill or a failover; pg-lifeline reconnects by itself"
      : 'nothing to do',
    data: { startedAt: started, uptimeMillis: row.up_ms, confLoadedAt: loaded, standby: row.standby },
  };
}
