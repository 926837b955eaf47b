import { AbortedError, AcquireTimeoutError, PoolEndedError, type PoolCounts } from '../errors.js';
import { fullJitterDelay } from './backoff.js';

/**
 * The life of a pooled resource.
 * - `opening`: being created; counts toward the pool's size.
 * - `idle`: open and waiting in the idle stack.
 * - `checking`: taken out of the idle stack by background work (a keepalive ping, a reset).
 * - `leased`: handed to a caller.
 * - `broken`: died while leased; closed once the caller gives it back.
 * - `closed`: gone; the record is dropped.
 */
export type ResourceState = 'opening' | 'idle' | 'checking' | 'leased' | 'broken' | 'closed';

/** Monotonic milliseconds; wall-clock jumps must not age or rejuvenate connections. */
export const now: () => number = performance.now.bind(performance);

/** Base of every record the pool manages; the policy layer subclasses it with the resource. */
export class PooledResource {
  /** Written only by {@link ResourcePool}'s transition method. */
  state: ResourceState = 'opening';
  readonly createdAt = now();
  /** When the resource last went back to the pool; kept by the policy layer. */
  idleSince = this.createdAt;
}

/** What the pool needs from the layer that knows the resource. */
export interface ResourceHooks<R extends PooledResource> {
  /** A fresh record, not yet open. */
  make(): R;
  /** Opens the resource; on failure it must leave nothing open behind. */
  open(resource: R): Promise<void>;
  /** Closes the resource; the pool does not wait for it. */
  close(resource: R): void;
  /** True when opening failed in a way no retry will fix, so every waiter should fail now. */
  isFatalOpenError(error: unknown): boolean;
  /** Turns a fatal open error into what waiters are rejected with. */
  fatalOpenError(error: unknown): Error;
  /** What `failFast` rejects with while opens are failing; `error` is the last open error. */
  unavailableError(error: unknown): Error;
  /** The backoff ceiling after an open failed with `error`: short when a retry costs the server nothing. */
  retryCapMillis(error: unknown): number;
  /** Observes every state change, after it happened. */
  transitioned(resource: R, from: ResourceState): void;
}

/** Sizing and retry settings of a {@link ResourcePool}. */
export interface ResourcePoolSettings {
  readonly max: number;
  readonly min: number;
  /** Backoff between failed opens: the first step, in milliseconds (the ceiling comes from the hooks). */
  readonly retryBaseMillis: number;
  /** While opens are failing and nothing is idle, reject at once instead of waiting. */
  readonly failFast: boolean;
}

interface Waiter<R> {
  resolve(resource: R): void;
  reject(error: Error): void;
  settled: boolean;
  readonly since: number;
  readonly deadline: number;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/**
 * A bounded pool of resources: a LIFO idle stack (hot resources stay hot, extras age out), a FIFO
 * queue of waiters, opening on demand up to `max`, and backoff while opens fail. While opens are
 * failing only one is in flight at a time, so an outage does not become a connection storm.
 */
export class ResourcePool<R extends PooledResource> {
  readonly #hooks: ResourceHooks<R>;
  readonly #settings: ResourcePoolSettings;
  readonly #all = new Set<R>();
  readonly #idle: R[] = [];
  readonly #waiters: Waiter<R>[] = [];
  #opening = 0;
  #failures = 0;
  #lastOpenError: unknown;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  // One timer for every waiter's deadline, armed for the earliest: arming one per waiter would
  // cost a timer on every contended checkout.
  #deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  #deadlineAt = Infinity;
  #closed = false;
  #emptied: (() => void) | undefined;
  #dispose: ((resource: R) => void) | undefined;
  /** One open is wanted with no waiter: failFast's background probe. */
  #probe = false;

  constructor(hooks: ResourceHooks<R>, settings: ResourcePoolSettings) {
    this.#hooks = hooks;
    this.#settings = settings;
  }

  /** Open resources plus those being opened. */
  get size(): number {
    return this.#all.size;
  }
  get idleCount(): number {
    return this.#idle.length;
  }
  /** Waiters with no open under way for them, as pg.Pool counts its queue (saturation alerts read it). */
  get waitingCount(): number {
    return Math.max(0, this.#waiters.length - this.#opening);
  }
  /** True once closed with no waiter left to serve: a resource given back now has no further use. */
  get closed(): boolean {
    return this.#closed && this.#waiters.length === 0;
  }

  counts(): PoolCounts {
    return { total: this.#all.size, idle: this.#idle.length, waiting: this.#waiters.length, opening: this.#opening, max: this.#settings.max };
  }

  /** Every record, in no particular order (for maintenance and shutdown). */
  resources(): IterableIterator<R> {
    return this.#all.values();
  }

  /** The idle stack, most recently used last. Read-only: callers change it through the methods below. */
  idle(): readonly R[] {
    return this.#idle;
  }

  /** Takes the most recently used idle resource without waiting, if there is one. */
  takeIdle(): R | undefined {
    const resource = this.#idle.pop();
    if (resource !== undefined) this.#transition(resource, 'leased');
    return resource;
  }

  /**
   * Waits for a resource to be released or opened, until `deadline` (a {@link now} timestamp;
   * Infinity for none) or until `signal` aborts, opening new ones while there is room. Callers take
   * idle resources with {@link takeIdle} first, so whatever this resolves with was handed over
   * just now. `since`: when the caller started waiting (for timeout messages).
   */
  acquire(deadline: number, signal: AbortSignal | undefined, since: number): Promise<R> {
    if (this.#closed) return Promise.reject(new PoolEndedError());
    if (signal?.aborted) return Promise.reject(new AbortedError('Waiting for a connection', signal.reason));
    if (this.#settings.failFast && this.#failures > 0) {
      // Keep one probe going so the pool notices the server coming back without any waiter.
      this.#probe = true;
      this.#fill();
      return Promise.reject(this.#hooks.unavailableError(this.#lastOpenError));
    }
    return new Promise<R>((resolve, reject) => {
      const waiter: Waiter<R> = { resolve, reject, settled: false, since, deadline, signal, onAbort: undefined };
      if (deadline < this.#deadlineAt) this.#armDeadline(deadline);
      if (signal !== undefined) {
        waiter.onAbort = () => this.#settle(waiter, new AbortedError('Waiting for a connection', signal.reason));
        signal.addEventListener('abort', waiter.onAbort, { once: true });
      }
      this.#waiters.push(waiter);
      this.#fill();
    });
  }

  /** Gives a leased or checked resource back: to the first waiter, else to the idle stack. */
  release(resource: R): void {
    if (resource.state === 'broken') return this.destroy(resource);
    if (this.#waiters.length > 0) {
      // Leased before the waiter leaves the queue: a drain that ends with it must not close it.
      this.#transition(resource, 'leased');
      this.#nextWaiter()?.resolve(resource);
      return;
    }
    if (this.#closed) return this.destroy(resource);
    this.#transition(resource, 'idle');
    this.#idle.push(resource);
  }

  /** Moves an idle resource to `checking`, so background work can use it undisturbed. */
  beginCheck(resource: R): void {
    this.#removeIdle(resource);
    this.#transition(resource, 'checking');
  }

  /** Moves a leased resource to `checking`, e.g. while a dirty session is rolled back. */
  hold(resource: R): void {
    this.#transition(resource, 'checking');
  }

  /** The resource died. Idle ones are closed now; leased ones once they come back. */
  markBroken(resource: R): void {
    switch (resource.state) {
      case 'idle':
        return this.destroy(resource);
      case 'leased':
      case 'checking':
        return this.#transition(resource, 'broken');
      default:
        return;
    }
  }

  /** Closes a resource and frees its slot. Safe to call on one already closed. */
  destroy(resource: R): void {
    if (resource.state === 'closed') return;
    if (resource.state === 'idle') this.#removeIdle(resource);
    this.#all.delete(resource);
    this.#transition(resource, 'closed');
    this.#hooks.close(resource);
    if (this.#all.size === 0) this.#emptied?.();
    this.#fill();
  }

  /** Opens resources until `min` are open (called by maintenance and at start). */
  warm(): void {
    this.#fill();
  }

  /**
   * Stops the pool as pg.Pool does: new acquires fail with {@link PoolEndedError}, waiters already
   * queued are still served (until their deadline), then idle and opening resources go to
   * `dispose` (which must end in {@link destroy}), and leased ones close as they come back.
   * Resolves once every resource is closed.
   */
  close(dispose: (resource: R) => void = (resource) => this.destroy(resource)): Promise<void> {
    this.#closed = true;
    this.#dispose = dispose;
    if (this.#waiters.length === 0) this.#drained();
    else this.#fill();
    if (this.#all.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#emptied = resolve;
    });
  }

  /** Fails the waiters a closing pool still serves (its shutdown deadline passed). */
  abandonWaiters(): void {
    for (let waiter = this.#nextWaiter(); waiter !== undefined; waiter = this.#nextWaiter()) {
      waiter.reject(new PoolEndedError());
    }
  }

  // The last waiter of a closing pool has been served or has failed: close what is left.
  #drained(): void {
    clearTimeout(this.#retryTimer);
    const dispose = this.#dispose;
    if (dispose === undefined) return;
    for (const resource of [...this.#all]) {
      if (resource.state === 'idle' || resource.state === 'opening') dispose(resource);
    }
  }

  #fill(): void {
    if (this.#closed && this.#waiters.length === 0) return;
    const { max } = this.#settings;
    const min = this.#closed ? 0 : this.#settings.min;
    let wanted = Math.max(this.#waiters.length - this.#opening, min - this.#all.size, this.#probe ? 1 - this.#opening : 0);
    while (wanted > 0 && this.#all.size < max) {
      // While opens fail, probe with one attempt at a time, spaced by backoff.
      if (this.#failures > 0 && (this.#opening > 0 || this.#retryTimer !== undefined)) return;
      this.#open();
      wanted--;
    }
  }

  #open(): void {
    const resource = this.#hooks.make();
    this.#all.add(resource);
    this.#opening++;
    this.#hooks.open(resource).then(
      () => {
        this.#opening--;
        this.#failures = 0;
        this.#probe = false;
        if (resource.state === 'closed') return;
        if (resource.state === 'broken') return this.destroy(resource);
        this.release(resource);
      },
      (error: unknown) => {
        this.#opening--;
        this.#failures++;
        this.#lastOpenError = error;
        if (resource.state !== 'closed') {
          this.#all.delete(resource);
          this.#transition(resource, 'closed');
          if (this.#all.size === 0) this.#emptied?.();
        }
        if (this.#closed && this.#waiters.length === 0) return;
        const fatal = this.#hooks.isFatalOpenError(error);
        if (fatal || this.#settings.failFast) {
          const rejection = fatal ? this.#hooks.fatalOpenError(error) : this.#hooks.unavailableError(error);
          for (let waiter = this.#nextWaiter(); waiter !== undefined; waiter = this.#nextWaiter()) waiter.reject(rejection);
          // failFast keeps probing on its own, so recovery is noticed without a waiter.
          if (!fatal) this.#probe = true;
        }
        this.#scheduleRetry();
      },
    );
  }

  #scheduleRetry(): void {
    const cap = this.#hooks.retryCapMillis(this.#lastOpenError);
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#fill();
    }, fullJitterDelay(this.#failures - 1, Math.min(this.#settings.retryBaseMillis, cap), cap));
    // Only waiters justify keeping the process alive; warming `min` alone does not.
    if (this.#waiters.length === 0) this.#retryTimer.unref();
  }

  #nextWaiter(): Waiter<R> | undefined {
    const waiter = this.#waiters.shift();
    if (waiter !== undefined) this.#finish(waiter);
    return waiter;
  }

  #armDeadline(at: number): void {
    clearTimeout(this.#deadlineTimer);
    this.#deadlineAt = at;
    this.#deadlineTimer = setTimeout(() => this.#expireWaiters(), Math.max(0, at - now()));
  }

  // Fails every waiter whose deadline has passed, then re-arms for the earliest one left.
  #expireWaiters(): void {
    this.#deadlineTimer = undefined;
    this.#deadlineAt = Infinity;
    const t = now();
    let next = Infinity;
    for (const waiter of [...this.#waiters]) {
      if (waiter.deadline <= t) {
        const lastOpenError = this.#failures > 0 ? this.#lastOpenError : undefined;
        this.#settle(waiter, new AcquireTimeoutError(Math.round(t - waiter.since), this.counts(), lastOpenError));
      } else {
        next = Math.min(next, waiter.deadline);
      }
    }
    if (next !== Infinity) this.#armDeadline(next);
  }

  #settle(waiter: Waiter<R>, error: Error): void {
    if (waiter.settled) return;
    const index = this.#waiters.indexOf(waiter);
    if (index !== -1) this.#waiters.splice(index, 1);
    this.#finish(waiter);
    waiter.reject(error);
  }

  #finish(waiter: Waiter<R>): void {
    waiter.settled = true;
    if (waiter.onAbort !== undefined) waiter.signal?.removeEventListener('abort', waiter.onAbort);
    // Nobody left to time out: the timer must not keep the process alive.
    if (this.#waiters.length === 0 && this.#deadlineTimer !== undefined) {
      clearTimeout(this.#deadlineTimer);
      this.#deadlineTimer = undefined;
      this.#deadlineAt = Infinity;
    }
    if (this.#closed && this.#waiters.length === 0) this.#drained();
  }

  #removeIdle(resource: R): void {
    const index = this.#idle.lastIndexOf(resource);
    if (index !== -1) this.#idle.splice(index, 1);
  }

  // The one place a resource's state changes.
  #transition(resource: R, to: ResourceState): void {
    const from = resource.state;
    resource.state = to;
    this.#hooks.transitioned(resource, from);
  }
}
