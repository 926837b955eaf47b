import * as pg from 'pg';
import type { ResolvedConfig } from '../config.js';
import type { ServerIdentity } from './commit-resolver.js';
import { isPermanentConnectError } from './classify.js';
import { isAuthFailure } from './credentials.js';
import { hookFailed } from './open-policy.js';
import { readRole, roleMatches, type HostRouter } from './host-router.js';
import type { HostTarget } from './hosts.js';
import { NoMatchingHostError, sqlStateOf } from '../errors.js';
import { PooledResource, now } from '../core/resource-pool.js';
import { minusJitter } from '../core/backoff.js';
import { answerReadyForQueryWaiters, destroySocket, sendCancelRequest, socketBytesRead, transactionStatusReader, type TransactionStatus } from './internals.js';

/** What a connection reports to its owner over its life. */
export interface ConnectionOwner {
  /** The connection's socket or session died; `error` is the first failure it saw. */
  died(connection: PgConnection, error: Error): void;
  /** The connection has closed completely. */
  closed(connection: PgConnection): void;
}

// A graceful close that gets no answer (a half-open peer) is cut off after this long.
const CLOSE_GRACE_MILLIS = 1000;

/**
 * The pool's record of one PostgreSQL connection: the pg client and everything the pool knows
 * about it. pg's own object is never given extra fields.
 */
export class PgConnection extends PooledResource {
  /** The pg client. While opening it is replaced as each host is tried; once open it never changes. */
  client: pg.Client;
  /** The host the client is (or is being) connected to. */
  target: HostTarget;
  /** The pool generation this connection was last proven alive in. */
  generation: number;
  /** When the connection last proved alive (opened, used, or pinged). */
  checkedAt = this.createdAt;
  /** When it retires (age with jitter, or its server's role changed); Infinity for never. */
  retireAt: number;
  /** This connection's share (0.9 to 1) of the pool's keepalive interval, so pings do not fire together. */
  readonly keepaliveJitter = 1 - Math.random() * 0.1;
  /** Completed checkouts. */
  uses = 0;
  /** How long it sat idle before its current checkout. */
  idleBeforeCheckout = 0;
  #failure: Error | undefined;
  #serverWord: Error | undefined;
  /** Whether this connection's death has already made the server suspect (once per connection). */
  failureNoted = false;
  /** Which server this is (system id and timeline), learned with its first tracked commit. */
  server: ServerIdentity | undefined;
  readonly #config: ResolvedConfig;
  readonly #owner: ConnectionOwner;
  readonly #plan: readonly HostTarget[];
  #transactionStatus: () => TransactionStatus;
  // Which cached provider password the current client was given (a number, never the secret).
  #credentialVersion: number | undefined;
  #fallback: { client: pg.Client; target: HostTarget } | undefined;
  #cancelled: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  /** `plan`: the hosts to try, best first (never empty). */
  constructor(config: ResolvedConfig, owner: ConnectionOwner, generation: number, plan: readonly HostTarget[]) {
    super();
    this.#config = config;
    this.#owner = owner;
    this.#plan = plan;
    this.generation = generation;
    this.retireAt = config.maxLifetimeMillis > 0 ? this.createdAt + minusJitter(config.maxLifetimeMillis, config.maxLifetimeJitter) : Infinity;
    this.target = plan[0] as HostTarget;
    this.client = this.#newClient(this.target);
    this.#transactionStatus = transactionStatusReader(this.client);
  }

  /** The session's transaction status: 'I' idle, 'T' in a transaction, 'E' in a failed one. */
  transactionStatus(): TransactionStatus {
    return this.#transactionStatus();
  }

  /**
   * Opens a session on the first host of the plan that answers and has the role the pool asks
   * for, then runs the app's hooks. A permanent failure (authentication) ends the search; on any
   * failure nothing is left open.
   */
  async open(router: HostRouter): Promise<void> {
    let lastError: unknown;
    for (const [i, target] of this.#plan.entries()) {
      if (i > 0) this.#use(this.#newClient(target), target);
      try {
        await this.#connect(target);
        if (router.checksRole && !(await this.#roleFits(router))) continue;
        await this.#finish(router);
        return;
      } catch (error) {
        destroySocket(this.client);
        router.markDown(target);
        if (isPermanentConnectError(error)) throw error;
        lastError = error;
      }
    }
    const fallback = this.#fallback;
    if (fallback !== undefined) {
      // prefer-standby / prefer-primary: nothing preferred answered, so take what did.
      this.#fallback = undefined;
      this.#use(fallback.client, fallback.target);
      return this.#finish(router);
    }
    throw lastError ?? new NoMatchingHostError(router.attrs, this.#plan);
  }

  // A password the server refuses is fetched again once and the open retried once; a second refusal stands.
  async #connect(target: HostTarget): Promise<void> {
    try {
      await this.#attempt();
    } catch (error) {
      const used = this.#credentialVersion;
      if (used === undefined || this.#config.credentials === undefined || !isAuthFailure(error)) throw error;
      destroySocket(this.client);
      this.#config.credentials.invalidate(target.key, used);
      this.#use(this.#newClient(target), target);
      await this.#attempt();
    }
  }

  /**
   * One connect. An attempt that gets no answer at all is cut at connectAttemptTimeoutMillis, so a
   * dead host leaves time for other tries; one where the server is talking (a slow TLS handshake,
   * authentication or a cold server) keeps pg's bound, the whole connectionTimeoutMillis.
   */
  async #attempt(): Promise<void> {
    const client = this.client;
    let timer: NodeJS.Timeout | undefined;
    const silent = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        if ((socketBytesRead(client) ?? 1) > 0) return;
        destroySocket(client);
        // pg's own words for a connect that ran out of time, so it is sorted the same everywhere.
        reject(new Error(`timeout expired: no answer from the server in ${this.#config.connectAttemptTimeoutMillis} ms`));
      }, this.#config.connectAttemptTimeoutMillis);
    });
    const connecting = client.connect();
    try {
      await Promise.race([connecting, silent]);
    } catch (error) {
      connecting.catch(() => undefined); // it rejects too once its socket is gone
      if (error instanceof Error && error.message === 'timeout expired' && (socketBytesRead(client) ?? 0) > 0) {
        throw new Error(`timeout expired: the server answered, but the login did not finish in ${this.#config.connectionTimeoutMillis} ms (a slow TLS handshake, authentication or a cold server): raise connectionTimeoutMillis`, { cause: error });
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  // Keeps the client if its server has the wanted role; a prefer-* pool keeps the first other one aside.
  async #roleFits(router: HostRouter): Promise<boolean> {
    const role = await readRole(this.client);
    if (roleMatches(router.attrs, role, true)) return true;
    router.markDown(this.target);
    if (this.#fallback === undefined && roleMatches(router.attrs, role, false)) this.#fallback = { client: this.client, target: this.target };
    else void this.client.end().catch(() => undefined);
    return false;
  }

  async #finish(router: HostRouter): Promise<void> {
    const config = this.#config;
    try {
      if (this.#fallback !== undefined) destroySocket(this.#fallback.client);
      this.#fallback = undefined;
      try {
        if (config.onConnect !== undefined) await config.onConnect(this.client);
        const verify = config.verify;
        if (verify !== undefined) {
          await new Promise<void>((resolve, reject) => verify(this.client as pg.PoolClient, (err) => (err ? reject(err) : resolve())));
        }
      } catch (error) {
        throw hookFailed(error);
      }
      if (this.failure !== undefined) throw this.failure;
    } catch (error) {
      destroySocket(this.client);
      throw error;
    }
    router.markUp(this.target);
    this.checkedAt = now();
  }

  #use(client: pg.Client, target: HostTarget): void {
    this.client = client;
    this.target = target;
    this.#transactionStatus = transactionStatusReader(client);
  }

  #newClient(target: HostTarget): pg.Client {
    const Client = this.#config.Client ?? pg.Client;
    // pg's bound covers a login that is under way; #attempt cuts one that gets no answer sooner.
    const options: Record<string, unknown> = { ...target.clientOptions, connectionTimeoutMillis: this.#config.connectionTimeoutMillis };
    // Passed explicitly: pg.Client hides it again on its own object.
    if (this.#config.password !== undefined) options['password'] = this.#config.password;
    const credentials = this.#config.credentials;
    // pg asks only when the server wants a password; the version is kept to refresh it if refused.
    if (credentials !== undefined) {
      this.#credentialVersion = undefined;
      options['password'] = async () => {
        const credential = await credentials.get(target.key, { host: target.host, port: target.port, user: client.user, database: client.database });
        this.#credentialVersion = credential.version;
        return credential.password;
      };
    }
    const client = new Client(options as pg.ClientConfig);
    // Listening for the client's whole life is what keeps a dying connection from becoming an
    // uncaught 'error' event that crashes the process. Only the current client's death counts.
    client.on('error', (error: Error) => {
      if (client === this.client) this.#die(error);
    });
    client.on('end', () => {
      if (client === this.client) this.#die(new Error('Connection terminated unexpectedly'));
    });
    return client;
  }

  /** Age, and idle time: so far if it is idle now, else before its current checkout. */
  facts(): { ageMillis: number; idleMillis: number } {
    const t = now();
    const idle = this.state === 'idle' || this.state === 'checking' ? t - this.idleSince : this.idleBeforeCheckout;
    return { ageMillis: t - this.createdAt, idleMillis: idle };
  }

  /**
   * Sends an empty query, the cheapest round trip there is. Resolves false, with the connection
   * torn down, if it fails or takes longer than `timeoutMillis`.
   */
  ping(timeoutMillis: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#die(new Error(`Connection check timed out after ${Math.round(timeoutMillis)} ms`));
        destroySocket(this.client);
        resolve(false);
      }, timeoutMillis);
      this.client.query('').then(
        () => {
          clearTimeout(timer);
          this.checkedAt = now();
          resolve(true);
        },
        (error: unknown) => {
          clearTimeout(timer);
          // The eviction must say why: the socket's own error may not have arrived yet.
          this.#die(error instanceof Error ? error : new Error(String(error)));
          destroySocket(this.client);
          resolve(false);
        },
      );
    });
  }

  /**
   * Stops the statement running on this connection and drops the connection: a cancel request
   * first, then the socket once the server has taken the request. Used when a statement outlives
   * its deadline, when the network may be dead and the server must not go on running it.
   */
  abandon(): void {
    this.#cancelled ??= sendCancelRequest(this.client).then(() => destroySocket(this.client));
  }

  /** Closes gracefully, or cuts the socket if the server does not answer in time. */
  close(): Promise<void> {
    this.#closing ??= this.#closeAfterCancel();
    return this.#closing;
  }

  async #closeAfterCancel(): Promise<void> {
    // A cancel still on its way must reach the server before the session goes away.
    await this.#cancelled;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => destroySocket(this.client), CLOSE_GRACE_MILLIS);
      timer.unref();
      this.client.end().then(
        () => undefined,
        () => destroySocket(this.client),
      ).finally(() => {
        clearTimeout(timer);
        this.#owner.closed(this);
        resolve();
      });
    });
  }

  /**
   * Why it died, once it has: what the server told a statement as it ended the session (57P01,
   * 57P02...) if it did, else the first failure the socket saw ("Connection terminated").
   */
  get failure(): Error | undefined {
    return this.#failure === undefined ? undefined : (this.#serverWord ?? this.#failure);
  }

  /** True while its server has sent nothing at all: an open that may be stuck on a dark network. */
  get unanswered(): boolean {
    return (socketBytesRead(this.client) ?? 0) === 0;
  }

  /** Keeps the server's own word on a session it ended, which explains the death best. */
  heardFromServer(error: unknown): void {
    if (error instanceof Error && sqlStateOf(error) !== undefined) this.#serverWord ??= error;
  }

  /** Records `error` as the cause of death and cuts the socket: its reply will never come. */
  cutOff(error: Error): void {
    this.#die(error);
    destroySocket(this.client);
  }

  /** Cuts the socket now (shutdown deadline, or a connection still opening). */
  destroy(): void {
    destroySocket(this.client);
    if (this.#fallback !== undefined) destroySocket(this.#fallback.client);
  }

  #die(error: Error): void {
    if (this.#failure !== undefined || this.#closing !== undefined) return;
    this.#failure = error;
    this.#owner.died(this, error);
    // After the pool has marked it dead, so a waiting checkin sees that.
    answerReadyForQueryWaiters(this.client);
  }
}
