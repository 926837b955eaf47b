import type * as pg from 'pg';
import { now } from '../core/resource-pool.js';
import type { HostSettings, HostTarget, TargetSessionAttrs } from './hosts.js';

/** A server's role, as a new connection finds it. */
export interface ServerRole {
  /** In recovery: a standby. */
  readonly standby: boolean;
  /** Refuses writes: a standby, or `default_transaction_read_only` on. */
  readonly readOnly: boolean;
}

/** One query answers both questions, on any server version and behind poolers alike. */
const ROLE_SQL = "SELECT pg_is_in_recovery() AS standby, current_setting('transaction_read_only') = 'on' AS read_only";

/** Reads a connected client's role: standby, and whether it refuses writes. */
export async function readRole(client: pg.Client): Promise<ServerRole> {
  const row = (await client.query<{ standby: boolean; read_only: boolean }>(ROLE_SQL)).rows[0];
  return { standby: row?.standby === true, readOnly: row?.read_only === true };
}

/** Whether a server in `role` is what `attrs` asks for; `strict` is false on a prefer-* fallback pass. */
export function roleMatches(attrs: TargetSessionAttrs, role: ServerRole, strict: boolean): boolean {
  switch (attrs) {
    case 'any':
      return true;
    case 'read-write':
      return !role.readOnly;
    case 'read-only':
      return role.readOnly;
    case 'primary':
      return !role.standby;
    case 'standby':
      return role.standby;
    case 'prefer-standby':
      return !strict || role.standby;
    case 'prefer-primary':
      return !strict || !role.standby;
  }
}

/**
 * Which host to try next. Hosts are tried in order (or shuffled, with load balancing). A host
 * that just failed is skipped for `recheckMillis`, as Npgsql's Host Recheck Seconds does, unless
 * every host failed: then all are tried anyway, since one may be back.
 */
export class HostRouter {
  readonly #settings: HostSettings;
  readonly #recheckMillis: number;
  readonly #downUntil = new Map<string, number>();

  constructor(settings: HostSettings, recheckMillis: number) {
    this.#settings = settings;
    this.#recheckMillis = recheckMillis;
  }

  get attrs(): TargetSessionAttrs {
    return this.#settings.targetSessionAttrs;
  }

  /** True when connections must be checked for their server's role after connecting. */
  get checksRole(): boolean {
    return this.#settings.targetSessionAttrs !== 'any';
  }

  /** True when the pool wants a writable server, so a refused write means the role changed. */
  get wantsWrites(): boolean {
    const attrs = this.#settings.targetSessionAttrs;
    return attrs === 'read-write' || attrs === 'primary' || attrs === 'prefer-primary';
  }

  /** The hosts to try for one new connection, best first. */
  plan(): readonly HostTarget[] {
    const targets = this.#settings.targets;
    if (targets.length === 1) return targets;
    const ordered = this.#settings.loadBalanceHosts ? shuffled(targets) : targets;
    if (this.#downUntil.size === 0) return ordered;
    const t = now();
    const up = ordered.filter((target) => (this.#downUntil.get(target.key) ?? 0) <= t);
    const down = ordered.filter((target) => (this.#downUntil.get(target.key) ?? 0) > t);
    return [...up, ...down];
  }

  /** The host could not be reached or had the wrong role: skip it for a while. */
  markDown(target: HostTarget): void {
    if (this.#settings.targets.length > 1) this.#downUntil.set(target.key, now() + this.#recheckMillis);
  }

  markUp(target: HostTarget): void {
    this.#downUntil.delete(target.key);
  }
}

/** A copy of `items` in random order (Fisher-Yates), for `load_balance_hosts=random`. */
export function shuffled<T>(items: readonly T[]): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}
