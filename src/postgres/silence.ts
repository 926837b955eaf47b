/** What the monitor found about a statement that went silent. */
export type SilenceVerdict =
  /** The monitor could not reach the host within the detection time. */
  | 'host-unreachable'
  /** The server has no such backend any more (killed, or the server restarted). */
  | 'backend-gone'
  /** The backend is idle although its reply never arrived: the reply was lost on the way. */
  | 'reply-lost';

/**
 * The failure recorded on a connection the monitor cut off. Its message starts as pg's own does
 * for a dead connection, so it is sorted as a lost connection everywhere else.
 */
export class SilentConnectionError extends Error {
  override readonly name = 'SilentConnectionError';
  readonly verdict: SilenceVerdict;
  /** How long the statement had received nothing when it was cut off. */
  readonly silentMillis: number;

  constructor(verdict: SilenceVerdict, silentMillis: number, host: string) {
    super(`Connection terminated by the monitor: ${silenceSummary(verdict, silentMillis, host)}`);
    this.verdict = verdict;
    this.silentMillis = silentMillis;
  }
}

/** The sentence a diagnosis gives for a connection the monitor cut off. */
export function silenceSummary(verdict: SilenceVerdict, silentMillis: number, host: string): string {
  const silent = `no reply for ${Math.round(silentMillis / 1000)} s`;
  if (verdict === 'host-unreachable') return `${silent}; the host did not answer a monitor connection (${host})`;
  if (verdict === 'backend-gone') return `${silent}; the server no longer has that backend (${host})`;
  return `${silent}; the server finished the statement but its reply never arrived (${host})`;
}

/** Sightings of an idle backend in a row before its reply counts as lost: one may still be on the wire while the check's answer arrives first. */
export const IDLE_SIGHTINGS = 2;

/**
 * What a check from another connection says of backend `pid`, given `pg_stat_activity`'s states
 * by pid: gone (no row), idle (its work is done, `idle` or `idle in transaction`: the reply was
 * sent), or slow (still working, waiting on a lock, or a state it could not read).
 */
export function judgeBackend(states: ReadonlyMap<number, string | null>, pid: number): 'slow' | 'idle' | 'gone' {
  if (!states.has(pid)) return 'gone';
  const state = states.get(pid);
  return typeof state === 'string' && state.startsWith('idle') ? 'idle' : 'slow';
}
