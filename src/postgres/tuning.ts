import type { ResolvedConfig } from '../config.js';
import type { DiagnosisFacts } from '../diagnostics/diagnose.js';
import type { ServerSettings } from '../diagnostics/server-settings.js';

/** Where tuning decisions are reported. */
export interface TuningReporter {
  warn(message: string, fields: Record<string, unknown>): void;
  tuned(keepaliveIntervalMillis: number, reason: string): void;
}

// Pings at half of any idle limit: a ping late by a maintenance tick still lands in time.
const SAFETY = 0.5;
// Silent idle deaths agree on an idle age when they are this close to the smallest of them.
const AGREEMENT = 1.25;
const SIGHTINGS = 3;

/**
 * What the pool has learned about its servers and the network in between: each server's timeouts
 * (read at the first connection to it), and the idle age at which a proxy, load balancer or NAT
 * silently drops connections. From these it keeps the keepalive interval below every idle limit,
 * so idle connections are pinged before anything kills them.
 */
export class ServerKnowledge {
  readonly #config: ResolvedConfig;
  readonly #reporter: TuningReporter;
  readonly #servers = new Map<string, ServerSettings>();
  readonly #silentDeaths: number[] = [];
  #learnedIdleKillMillis: number | undefined;
  #keepaliveMillis: number;
  #idleTimeoutMillis: number;
  #warned = false;

  constructor(config: ResolvedConfig, reporter: TuningReporter) {
    this.#config = config;
    this.#reporter = reporter;
    this.#keepaliveMillis = config.keepaliveIntervalMillis;
    this.#idleTimeoutMillis = config.idleTimeoutMillis;
  }

  /**
   * The idle timeout in force. With keepalive pings on, they keep idle connections alive and the
   * configured value stands; with pings off, idle connections are closed by the pool, cleanly,
   * before the server or the network kills them.
   */
  get idleTimeoutMillis(): number {
    return this.#idleTimeoutMillis;
  }

  /** The keepalive interval in force: the configured one, lowered below any idle limit found. */
  get keepaliveMillis(): number {
    return this.#keepaliveMillis;
  }

  get learnedIdleKillMillis(): number | undefined {
    return this.#learnedIdleKillMillis;
  }

  knows(host: string): boolean {
    return this.#servers.has(host);
  }

  server(host: string): ServerSettings | undefined {
    return this.#servers.get(host);
  }

  /** Facts for diagnosing a failure of a connection to `host`. */
  facts(host: string, ageMillis: number, idleMillis: number): DiagnosisFacts {
    return { ageMillis, idleMillis, host, server: this.#servers.get(host), learnedIdleKillMillis: this.#learnedIdleKillMillis };
  }

  /** Records a server's settings, then re-tunes and warns once about a conflicting config. */
  learnServer(host: string, settings: ServerSettings): void {
    this.#servers.set(host, settings);
    this.#checkConfig(host, settings);
    this.#retune();
  }

  /**
   * Drops what was read from `host`, so the next connection reads it again: its server just ended
   * a session for idleness, and its idle_session_timeout may have changed since it was read.
   */
  forget(host: string): void {
    this.#servers.delete(host);
  }

  /**
   * An idle connection died with no word from its server. Once a few such deaths agree on an
   * idle age that no server timeout explains, that age is taken as a proxy's idle timeout.
   */
  silentIdleDeath(host: string, idleMillis: number): void {
    const limit = this.#servers.get(host)?.idleSessionTimeoutMillis ?? 0;
    if (limit > 0 && idleMillis >= limit * 0.9) return;
    this.#silentDeaths.push(idleMillis);
    if (this.#silentDeaths.length > 20) this.#silentDeaths.shift();
    const sorted = [...this.#silentDeaths].sort((a, b) => a - b);
    for (let i = 0; i + SIGHTINGS <= sorted.length; i++) {
      const low = sorted[i] as number;
      if ((sorted[i + SIGHTINGS - 1] as number) <= low * AGREEMENT && low > 0) {
        if (this.#learnedIdleKillMillis === undefined || low < this.#learnedIdleKillMillis) {
          this.#learnedIdleKillMillis = low;
          this.#retune();
        }
        return;
      }
    }
  }

  #retune(): void {
    const configured = this.#config.keepaliveIntervalMillis;
    const limits = [...this.#servers.values()].map((s) => s.idleSessionTimeoutMillis).filter((l) => l > 0);
    if (this.#learnedIdleKillMillis !== undefined) limits.push(this.#learnedIdleKillMillis);
    if (configured === 0) {
      if (limits.length > 0) this.#idleTimeoutMillis = Math.min(this.#config.idleTimeoutMillis || Infinity, ...limits.map((l) => Math.floor(l * SAFETY)));
      return;
    }
    const tuned = Math.min(configured, ...limits.map((l) => Math.floor(l * SAFETY)));
    if (tuned === this.#keepaliveMillis) return;
    this.#keepaliveMillis = Math.max(1, tuned);
    const reason = this.#learnedIdleKillMillis !== undefined && tuned === Math.floor(this.#learnedIdleKillMillis * SAFETY) ? `idle connections die silently after about ${this.#learnedIdleKillMillis} ms` : 'the server ends idle sessions (idle_session_timeout)';
    this.#reporter.tuned(this.#keepaliveMillis, reason);
  }

  #checkConfig(host: string, settings: ServerSettings): void {
    const limit = settings.idleSessionTimeoutMillis;
    if (this.#warned || limit === 0) return;
    const problems: string[] = [];
    if (this.#config.keepaliveIntervalMillis === 0) problems.push('keepaliveIntervalMillis is 0, so idle connections are not pinged and the server will end them');
    if (this.#config.idleTimeoutMillis === 0 || this.#config.idleTimeoutMillis > limit) problems.push(`idleTimeoutMillis (${this.#config.idleTimeoutMillis || 'never'}) lets connections sit idle longer than that`);
    if (this.#config.maxLifetimeMillis === 0 || this.#config.maxLifetimeMillis > limit) problems.push(`maxLifetimeSeconds (${this.#config.maxLifetimeMillis / 1000 || 'never'}) outlives it`);
    if (problems.length === 0) return;
    this.#warned = true;
    const keepalive =
      this.#config.keepaliveIntervalMillis > 0
        ? ` pg-lifeline pings idle connections every ${Math.floor(limit * SAFETY)} ms to keep them alive.`
        : ` pg-lifeline closes idle connections after ${Math.floor(limit * SAFETY)} ms, before the server does.`;
    this.#reporter.warn(`${host} ends sessions idle for ${limit} ms (idle_session_timeout), but ${problems.join('; ')}.${keepalive}`, { host, idleSessionTimeoutMillis: limit });
  }
}
