import type * as pg from 'pg';
import type { Diagnosis } from '../diagnostics/diagnose.js';
import { ClientReleasedError, DoubleReleaseError } from '../errors.js';
import { isConnectionError } from './classify.js';
import type { ServerIdentity } from './commit-resolver.js';
import type { PgConnection } from './connection.js';

/** What a lease needs from the pool. */
export interface LeaseOwner {
  /** Whether to record release sites now. */
  readonly releaseTraces: boolean;
  /** A handle was misused (used after release, or released twice). */
  misused(): void;
  /** Takes the connection back; `error` (truthy) asks for it to be destroyed. */
  checkin(connection: PgConnection, error: unknown): void;
  /**
   * Replaces a connection-level failure with a typed error; returns other errors unchanged.
   * `sent`: the statement may have reached the server.
   */
  translate(error: unknown, connection: PgConnection, sent: boolean): unknown;
  diagnose(error: unknown, connection: PgConnection): Diagnosis;
}

type AnyFunction = (...args: unknown[]) => unknown;

/** A statement issued through a lease, as far as telling whether the next one was sent. */
interface Issued {
  settled: boolean;
  /** It failed because the connection died. */
  lost: boolean;
}

/**
 * One checkout of one connection. The app gets `lease.client`, a Proxy of the pg client: it
 * passes `instanceof pg.Client` and reaches every client member, but once released it refuses
 * to run queries. Each checkout has its own proxy, so a handle kept from an earlier checkout
 * cannot run queries on the session someone else now holds.
 */
export class Lease implements ProxyHandler<pg.Client> {
  /** The handle given to the app. */
  readonly client: pg.PoolClient & AsyncDisposable;
  readonly #connection: PgConnection;
  readonly #owner: LeaseOwner;
  #released = false;
  // A captured stack is formatted only if someone reads it, which keeps release cheap.
  #releaseSite: { stack?: string } | undefined;
  #query: AnyFunction | undefined;
  #release: AnyFunction | undefined;
  #dispose: AnyFunction | undefined;
  #last: Issued | undefined;

  constructor(connection: PgConnection, owner: LeaseOwner) {
    this.#connection = connection;
    this.#owner = owner;
    this.client = new Proxy(connection.client, this) as pg.PoolClient & AsyncDisposable;
  }

  get released(): boolean {
    return this.#released;
  }

  /** The server's identity, once learned on this connection. */
  server(): ServerIdentity | undefined {
    return this.#connection.server;
  }

  rememberServer(server: ServerIdentity): void {
    this.#connection.server = server;
  }

  /** Explains a failure of this lease's connection. */
  diagnose(error: unknown): Diagnosis {
    return this.#owner.diagnose(error, this.#connection);
  }

  get(target: pg.Client, property: string | symbol): unknown {
    switch (property) {
      case 'query':
        return (this.#query ??= (...args) => this.#runQuery(target, args));
      case 'release':
        return (this.#release ??= (error) => this.release(error));
      case Symbol.asyncDispose:
        return (this.#dispose ??= () => {
          if (!this.#released) this.release();
          return Promise.resolve();
        });
      case 'connect':
      case 'end':
        if (this.#released) {
          return () => {
            throw this.#misuse(new ClientReleasedError(property, this.#releaseStack()));
          };
        }
        break;
    }
    const value: unknown = Reflect.get(target, property);
    return typeof value === 'function' ? this.#connection.bound(value as AnyFunction) : value;
  }

  has(target: pg.Client, property: string | symbol): boolean {
    return property === 'release' || property === Symbol.asyncDispose || Reflect.has(target, property);
  }

  /** Gives the connection back. A second call throws {@link DoubleReleaseError}. */
  release(error?: unknown): void {
    if (this.#released) throw this.#misuse(new DoubleReleaseError(this.#releaseStack()));
    this.#released = true;
    if (this.#owner.releaseTraces) {
      this.#releaseSite = {};
      Error.captureStackTrace(this.#releaseSite, this.release);
    }
    this.#owner.checkin(this.#connection, error);
  }

  #misuse<E extends Error>(error: E): E {
    this.#owner.misused();
    return error;
  }

  #releaseStack(): string | undefined {
    return this.#releaseSite?.stack?.replace(/^Error\n/, '');
  }

  #runQuery(target: pg.Client, args: unknown[]): unknown {
    const first = args[0] as { submit?: unknown } | null | undefined;
    const last = args[args.length - 1];
    if (this.#released) {
      const error = this.#misuse(new ClientReleasedError('query', this.#releaseStack()));
      if (typeof first?.submit === 'function') throw error;
      if (typeof last === 'function') {
        process.nextTick(last as AnyFunction, error);
        return undefined;
      }
      return Promise.reject(error);
    }
    const query = target.query as unknown as AnyFunction;
    // Submittables (cursors, streams) report errors through their own events.
    if (typeof first?.submit === 'function') return Reflect.apply(query, target, args);
    // pg sends a statement queued behind another only once that one has finished. If the one
    // ahead was cut off by the connection's death, this one never left the client.
    const ahead = this.#last;
    const queued = ahead !== undefined && !ahead.settled;
    const issued: Issued = { settled: false, lost: false };
    this.#last = issued;
    const failed = (error: unknown): unknown => {
      issued.settled = true;
      issued.lost = isConnectionError(error);
      return this.#owner.translate(error, this.#connection, !(queued && ahead.lost));
    };
    if (typeof last === 'function') {
      args[args.length - 1] = (error: unknown, result: unknown) => {
        issued.settled = true;
        (last as AnyFunction)(error ? failed(error) : error, result);
      };
      return Reflect.apply(query, target, args);
    }
    return (Reflect.apply(query, target, args) as Promise<unknown>).then(
      (result) => {
        issued.settled = true;
        return result;
      },
      (error: unknown) => {
        throw failed(error);
      },
    );
  }
}
