import pg from 'pg';
import type { ResolvedConfig } from '../config.js';
import type { ServerIdentity } from './commit-resolver.js';
import { PooledResource, now } from '../core/resource-pool.js';
import { minusJitter } from '../core/backoff.js';
import { destroySocket, transactionStatusReader, type TransactionStatus } from './internals.js';

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
  readonly client: pg.Client;
  /** The pool generation this connection was last proven alive in. */
  generation: number;
  /** When the connection last proved alive (opened, used, or pinged). */
  checkedAt = this.createdAt;
  /** When it retires for age (jittered); Infinity for never. */
  readonly retireAt: number;
  /** Keepalive interval for this connection (jittered), 0 for none. */
  readonly keepaliveMillis: number;
  /** Completed checkouts. */
  uses = 0;
  /** How long it sat idle before its current checkout. */
  idleBeforeCheckout = 0;
  /** The first failure that killed it. */
  failure: Error | undefined;
  /** Whether this connection's death has already made the server suspect (once per connection). */
  failureNoted = false;
  /** Which server this is (system id and timeline), learned with its first tracked commit. */
  server: ServerIdentity | undefined;
  readonly transactionStatus: () => TransactionStatus;
  readonly #owner: ConnectionOwner;
  readonly #bound = new Map<(...args: never[]) => unknown, unknown>();
  #closing: Promise<void> | undefined;

  constructor(config: ResolvedConfig, owner: ConnectionOwner, generation: number) {
    super();
    const Client = config.Client ?? pg.Client;
    // pg's client reads connectionTimeoutMillis as its per-attempt bound; the pool's acquire deadline is separate.
    this.client = new Client({ ...config.clientOptions, connectionTimeoutMillis: config.connectAttemptTimeoutMillis } as pg.ClientConfig);
    this.generation = generation;
    this.#owner = owner;
    this.retireAt = config.maxLifetimeMillis > 0 ? this.createdAt + minusJitter(config.maxLifetimeMillis, config.maxLifetimeJitter) : Infinity;
    this.keepaliveMillis = minusJitter(config.keepaliveIntervalMillis, 0.1);
    this.transactionStatus = transactionStatusReader(this.client);
    // Listening for the client's whole life is what keeps a dying connection from becoming
    // an uncaught 'error' event that crashes the process.
    this.client.on('error', (error: Error) => this.#die(error));
    this.client.on('end', () => this.#die(new Error('Connection terminated unexpectedly')));
  }

  /** Opens the session, then runs the app's hooks; on any failure nothing is left open. */
  async open(config: ResolvedConfig): Promise<void> {
    try {
      await this.client.connect();
      if (config.onConnect !== undefined) await config.onConnect(this.client);
      const verify = config.verify;
      if (verify !== undefined) {
        await new Promise<void>((resolve, reject) => verify(this.client as pg.PoolClient, (err) => (err ? reject(err) : resolve())));
      }
      if (this.failure !== undefined) throw this.failure;
    } catch (error) {
      destroySocket(this.client);
      throw error;
    }
    this.checkedAt = now();
  }

  /** Age and idle time, for error messages. */
  facts(): { ageMillis: number; idleMillis: number } {
    return { ageMillis: now() - this.createdAt, idleMillis: this.idleBeforeCheckout };
  }

  /** `fn` bound to the client, cached so repeated property reads return the same function. */
  bound<F extends (...args: never[]) => unknown>(fn: F): F {
    let bound = this.#bound.get(fn) as F | undefined;
    if (bound === undefined) {
      bound = fn.bind(this.client) as F;
      this.#bound.set(fn, bound);
    }
    return bound;
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
        () => {
          clearTimeout(timer);
          resolve(false);
        },
      );
    });
  }

  /** Closes gracefully, or cuts the socket if the server does not answer in time. */
  close(): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
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
    return this.#closing;
  }

  /** Cuts the socket now (shutdown deadline, or a connection still opening). */
  destroy(): void {
    destroySocket(this.client);
  }

  #die(error: Error): void {
    if (this.failure !== undefined || this.#closing !== undefined) return;
    this.failure = error;
    this.#owner.died(this, error);
  }
}
