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
 * cannot run queries on the session someone else now holds. What the app assigns to its handle
 * (a wrapped `query` or `release`, a `lastQuery`) stays on that handle, as pg keeps it on its
 * client, and never reaches pg's object or the connection's next holder.
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
  /** Properties the app assigned or defined on its handle. */
  #own: Map<string | symbol, PropertyDescriptor> | undefined;
  /** The client's methods as this handle shows them, so repeated reads return the same function. */
  #methods: Map<AnyFunction, AnyFunction> | undefined;

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

  get(target: pg.Client, property: string | symbol, receiver: unknown): unknown {
    const own = this.#own?.get(property);
    if (own !== undefined) return own.get === undefined ? own.value : Reflect.apply(own.get, receiver, []);
    switch (property) {
      case 'query':
        return (this.#query ??= (...args) => this.#runQuery(target, args));
      case 'release':
        return (this.#release ??= (error) => this.release(error));
      case Symbol.asyncDispose:
        return (this.#dispose ??= () => {
          // Through the handle, so a release the app wrapped runs its wrapper.
          if (!this.#released) this.client.release();
          return Promise.resolve();
        });
      case 'constructor':
        return Reflect.get(target, property);
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
    return typeof value === 'function' ? this.#method(target, value as AnyFunction) : value;
  }

  set(target: pg.Client, property: string | symbol, value: unknown, receiver: unknown): boolean {
    const own = this.#own?.get(property);
    if (own?.set !== undefined) {
      Reflect.apply(own.set, receiver, [value]);
      return true;
    }
    if (own !== undefined && (own.get !== undefined || own.writable === false)) return false;
    if (own !== undefined && receiver === this.client) {
      own.value = value;
      return true;
    }
    // An object inheriting from the handle gets the property itself, as with any prototype.
    if (receiver !== this.client) return Reflect.defineProperty(receiver as object, property, { value, writable: true, enumerable: true, configurable: true });
    return this.defineProperty(target, property, { value, writable: true, enumerable: true, configurable: true });
  }

  /**
   * Defines on the handle only. A non-configurable property is refused: a Proxy may report one
   * only where pg's object has it, and writing there would hand it to the next holder.
   */
  defineProperty(_target: pg.Client, property: string | symbol, descriptor: PropertyDescriptor): boolean {
    const own = this.#own?.get(property);
    const accessor = 'get' in descriptor || 'set' in descriptor;
    // Fields left out of a new property default as in Object.defineProperty.
    const defaults: PropertyDescriptor = accessor ? { enumerable: false } : { value: undefined, writable: false, enumerable: false };
    const merged: PropertyDescriptor = { ...(own ?? defaults), ...descriptor };
    if (merged.configurable !== true) return false;
    if (accessor) {
      delete merged.value;
      delete merged.writable;
    } else if ('value' in descriptor || 'writable' in descriptor) {
      delete merged.get;
      delete merged.set;
    }
    (this.#own ??= new Map()).set(property, merged);
    return true;
  }

  deleteProperty(_target: pg.Client, property: string | symbol): boolean {
    // pg's own fields stay: the connection's next holder needs them.
    this.#own?.delete(property);
    return true;
  }

  has(target: pg.Client, property: string | symbol): boolean {
    return this.#own?.has(property) === true || property === 'release' || property === Symbol.asyncDispose || Reflect.has(target, property);
  }

  ownKeys(target: pg.Client): (string | symbol)[] {
    const keys = Reflect.ownKeys(target);
    for (const key of this.#own?.keys() ?? []) if (!keys.includes(key)) keys.push(key);
    return keys;
  }

  getOwnPropertyDescriptor(target: pg.Client, property: string | symbol): PropertyDescriptor | undefined {
    const own = this.#own?.get(property);
    return own === undefined ? Reflect.getOwnPropertyDescriptor(target, property) : { ...own };
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

  // pg's methods run on pg's own object. One that returns that object (on, once, off...: an
  // EventEmitter returns `this`) returns the app's handle instead, as pg returns the client held.
  #method(target: pg.Client, fn: AnyFunction): AnyFunction {
    this.#methods ??= new Map();
    let method = this.#methods.get(fn);
    if (method === undefined) {
      const handle = this.client;
      method = new Proxy(fn, {
        apply: (f, _this, args: unknown[]) => {
          const result: unknown = Reflect.apply(f, target, args);
          return result === target ? handle : result;
        },
      });
      this.#methods.set(fn, method);
    }
    return method;
  }

  #runQuery(target: pg.Client, args: unknown[]): unknown {
    const first = args[0] as { submit?: unknown; callback?: unknown } | null | undefined;
    const submittable = typeof first?.submit === 'function';
    const slot = callbackSlot(args, submittable);
    if (this.#released) {
      const error = this.#misuse(new ClientReleasedError('query', this.#releaseStack()));
      if (submittable) throw error;
      if (slot !== undefined) {
        process.nextTick(callbackAt(args, slot), error);
        return undefined;
      }
      return Promise.reject(error);
    }
    const query = target.query as unknown as AnyFunction;
    // Submittables (cursors, streams) report errors through their own events.
    if (submittable) return Reflect.apply(query, target, args);
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
    if (slot !== undefined) {
      const callback = callbackAt(args, slot);
      const settled = (error: unknown, result: unknown): void => {
        issued.settled = true;
        callback(error ? failed(error) : error, result);
      };
      // The app's config object is left as it was: the copy inherits everything else from it.
      if (slot === 'config') args[0] = Object.create(first as object, { callback: { value: settled, writable: true, enumerable: true, configurable: true } });
      else args[slot] = settled;
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

/**
 * Where pg takes a query's callback from, in pg's order: `query(config, values, callback)`, then
 * `query(config, callback)`, then `config.callback`. A Submittable's callback is its own affair.
 */
function callbackSlot(args: unknown[], submittable: boolean): 1 | 2 | 'config' | undefined {
  if (typeof args[2] === 'function') return 2;
  if (typeof args[1] === 'function') return 1;
  if (!submittable && typeof (args[0] as { callback?: unknown } | null | undefined)?.callback === 'function') return 'config';
  return undefined;
}

function callbackAt(args: unknown[], slot: 1 | 2 | 'config'): AnyFunction {
  return (slot === 'config' ? (args[0] as { callback: AnyFunction }).callback : args[slot]) as AnyFunction;
}
