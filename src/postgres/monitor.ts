import * as pg from 'pg';
import type { ResolvedConfig } from '../config.js';
import type { PgConnection } from './connection.js';
import type { HostTarget } from './hosts.js';
import { destroySocket, hasQueryInFlight, protocolPid, setSocketRef, socketBytesRead } from './internals.js';
import { behindPooler } from './pooler.js';
import { IDLE_SIGHTINGS, SilentConnectionError, judgeBackend, type SilenceVerdict } from './silence.js';

/** What the monitor needs from the pool. */
export interface MonitorOwner {
  /** Every connection of the pool. */
  connections(): Iterable<PgConnection>;
  /** Destroys a connection whose statement will never be answered; `error` says why. */
  cutOff(connection: PgConnection, error: SilentConnectionError): void;
  /** A suspect host did not answer the monitor within the detection time. */
  hostUnreachable(host: string, silentMillis: number): void;
  /** One monitor check ended: `answered` false when the host could not be reached in time. */
  checked(host: string, answered: boolean): void;
}

/** One statement in flight, as the monitor sees it. */
interface Watch {
  bytes: number;
  /** When bytes last arrived (or the statement was first seen). */
  since: number;
  /** Not to be asked about again before this (it was found slow, not dead). */
  nextCheck: number;
  /** Checks in a row that found its backend idle. */
  idleSeen: number;
}

// The backend's state, asked from a separate connection. Every state but idle means it still works
// for us (active, fastpath, or waiting on a lock); a missing row means it is gone.
const ACTIVITY_SQL = 'SELECT pid, state FROM pg_stat_activity WHERE pid = ANY($1::int[])';

/**
 * Watches statements in flight from the maintenance tick, at no cost to the statements
 * themselves: a statement that has received nothing for `monitorGraceMillis` makes its host
 * suspect, and the host's monitor connection asks the server about its backend. One check covers
 * every suspect of a host; a host that does not answer for `monitorDetectionMillis` is declared
 * unreachable.
 */
export class InFlightMonitor {
  readonly #config: ResolvedConfig;
  readonly #owner: MonitorOwner;
  readonly #watches = new Map<PgConnection, Watch>();
  readonly #hosts = new Map<string, HostMonitor>();

  constructor(config: ResolvedConfig, owner: MonitorOwner) {
    this.#config = config;
    this.#owner = owner;
  }

  /** Looks at every statement in flight; called by the maintenance loop. */
  tick(t: number): void {
    const grace = this.#config.monitorGraceMillis;
    if (grace === 0) return;
    const suspects = new Map<string, { target: HostTarget; connections: PgConnection[] }>();
    const seen = new Set<PgConnection>();
    for (const connection of this.#owner.connections()) {
      if (connection.state !== 'leased' || !hasQueryInFlight(connection.client)) continue;
      const bytes = socketBytesRead(connection.client);
      if (bytes === undefined) continue;
      seen.add(connection);
      const watch = this.#watches.get(connection);
      if (watch === undefined || watch.bytes !== bytes) {
        this.#watches.set(connection, { bytes, since: t, nextCheck: t + grace, idleSeen: 0 });
      } else if (t >= watch.nextCheck) {
        const key = connection.target.key;
        const group = suspects.get(key) ?? { target: connection.target, connections: [] };
        group.connections.push(connection);
        suspects.set(key, group);
      }
    }
    for (const connection of this.#watches.keys()) if (!seen.has(connection)) this.#watches.delete(connection);
    // A host's monitor stays open while any of its statements is watched: a long query is a suspect
    // again each grace period, and logging in anew for every check would cost more than the check.
    const watched = new Set([...this.#watches.keys()].map((connection) => connection.target.key));
    for (const [key, host] of this.#hosts) {
      if (!suspects.has(key) && !watched.has(key) && !host.busy) {
        host.close();
        this.#hosts.delete(key);
      }
    }
    for (const [key, { target, connections }] of suspects) {
      let host = this.#hosts.get(key);
      if (host === undefined) {
        host = new HostMonitor(this.#config, target);
        this.#hosts.set(key, host);
      }
      this.#checkHost(host, connections, t);
    }
  }

  #checkHost(host: HostMonitor, suspects: PgConnection[], t: number): void {
    const key = host.target.key;
    if (host.unansweredSince !== undefined && t - host.unansweredSince >= this.#config.monitorDetectionMillis) {
      const silentMillis = Math.max(...suspects.map((c) => t - (this.#watches.get(c)?.since ?? t)));
      host.close();
      this.#hosts.delete(key);
      this.#owner.hostUnreachable(key, silentMillis);
      return;
    }
    if (host.busy) {
      if (t >= host.deadline) host.abort();
      return;
    }
    const asked = suspects.map((connection) => ({ connection, bytes: this.#watches.get(connection)?.bytes }));
    const timeout = Math.min(2000, Math.max(500, this.#config.monitorDetectionMillis / 4));
    void host.ask(asked.map(({ connection }) => protocolPid(connection.client)), t, timeout).then((states) => {
      this.#owner.checked(key, states !== undefined);
      if (states !== undefined) this.#judge(asked, states);
    });
  }

  // Applies one answer: undefined states mean the monitor cannot tell backends apart (a pooler),
  // so the host answering is all it learned.
  #judge(asked: { connection: PgConnection; bytes: number | undefined }[], states: Map<number, string | null> | null): void {
    const t = performance.now();
    for (const { connection, bytes } of asked) {
      const watch = this.#watches.get(connection);
      if (watch === undefined || watch.bytes !== bytes || socketBytesRead(connection.client) !== bytes) continue;
      const pid = protocolPid(connection.client);
      const verdict = states === null || pid === undefined ? 'slow' : judgeBackend(states, pid);
      if (verdict === 'idle' && ++watch.idleSeen < IDLE_SIGHTINGS) continue;
      if (verdict === 'slow') {
        watch.idleSeen = 0;
        watch.nextCheck = t + this.#config.monitorGraceMillis;
        continue;
      }
      this.#watches.delete(connection);
      const reason: SilenceVerdict = verdict === 'gone' ? 'backend-gone' : 'reply-lost';
      this.#owner.cutOff(connection, new SilentConnectionError(reason, t - watch.since, connection.target.key));
    }
  }

  /** Closes every monitor connection (the pool is ending). */
  stop(): void {
    for (const host of this.#hosts.values()) host.close();
    this.#hosts.clear();
    this.#watches.clear();
  }
}

/**
 * The monitor connection of one host: opened when the host first has a suspect, used for nothing
 * else, and closed once the host has none.
 */
class HostMonitor {
  readonly target: HostTarget;
  readonly #config: ResolvedConfig;
  #client: pg.Client | undefined;
  /** False behind a pooler, whose protocol pids name no backend. */
  #pidsUsable: boolean | undefined;
  #busy = false;
  /** When the current check must have answered by; the maintenance tick enforces it. */
  deadline = Infinity;
  /** When the first check still without an answer began. */
  unansweredSince: number | undefined;

  constructor(config: ResolvedConfig, target: HostTarget) {
    this.#config = config;
    this.target = target;
  }

  get busy(): boolean {
    return this.#busy;
  }

  /**
   * Asks for the states of `pids`' backends. Resolves with them, with null when backends cannot be
   * told apart but the host answered, or undefined when it did not answer in time.
   */
  async ask(pids: (number | undefined)[], t: number, timeoutMillis: number): Promise<Map<number, string | null> | null | undefined> {
    this.#busy = true;
    this.deadline = t + timeoutMillis;
    this.unansweredSince ??= t;
    try {
      const client = await this.#connect(timeoutMillis);
      const known = pids.filter((pid): pid is number => pid !== undefined);
      let states: Map<number, string | null> | null = null;
      if (this.#pidsUsable === true && known.length > 0) {
        const rows = (await client.query<{ pid: number; state: string | null }>(ACTIVITY_SQL, [known])).rows;
        states = new Map(rows.map((row) => [row.pid, row.state]));
      } else {
        await client.query('');
      }
      this.unansweredSince = undefined;
      return states;
    } catch {
      this.close();
      return undefined;
    } finally {
      this.#busy = false;
      this.deadline = Infinity;
    }
  }

  async #connect(timeoutMillis: number): Promise<pg.Client> {
    if (this.#client !== undefined) return this.#client;
    const Client = this.#config.Client ?? pg.Client;
    const options: Record<string, unknown> = { ...this.target.clientOptions, connectionTimeoutMillis: timeoutMillis, application_name: 'pg-lifeline monitor' };
    if (this.#config.password !== undefined) options['password'] = this.#config.password;
    const client = new Client(options as pg.ClientConfig);
    // A monitor connection that dies is simply opened again on the next check.
    client.on('error', () => {
      if (this.#client === client) this.#client = undefined;
    });
    this.#client = client;
    await client.connect();
    setSocketRef(client, false);
    this.#pidsUsable = !(await behindPooler(client));
    return client;
  }

  /** Gives up on a check that outlived its deadline: the host did not answer in time. */
  abort(): void {
    const client = this.#client;
    this.#client = undefined;
    if (client !== undefined) destroySocket(client);
  }

  close(): void {
    const client = this.#client;
    this.#client = undefined;
    if (client === undefined) return;
    destroySocket(client);
    void client.end().catch(() => undefined);
  }
}
