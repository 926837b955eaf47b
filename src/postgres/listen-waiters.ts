// The callers of pool.listen() and listener.add() waiting for their channel's first LISTEN.

interface Waiter {
  readonly channel: string;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
  readonly timer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Callers waiting for LISTEN on a channel, each with a deadline: a session that cannot open (the
 * server is down or full) must not keep `pool.listen()` pending, and silent, for ever.
 */
export class ListenWaiters {
  readonly #timeoutMillis: number;
  readonly #expired: (channel: string) => Error;
  #waiters: Waiter[] = [];

  /** `timeoutMillis` 0 waits for ever; `expired` says why a waiter gave up. */
  constructor(timeoutMillis: number, expired: (channel: string) => Error) {
    this.#timeoutMillis = timeoutMillis;
    this.#expired = expired;
  }

  /** Resolves once `resolve` matches the channel; rejects on `reject` or at the deadline. */
  wait(channel: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = this.#timeoutMillis > 0 ? setTimeout(() => this.#expire(waiter), this.#timeoutMillis) : undefined;
      const waiter: Waiter = { channel, resolve, reject, timer };
      this.#waiters.push(waiter);
    });
  }

  /** Resolves every waiter whose channel matches. */
  resolve(match: (channel: string) => boolean): void {
    for (const waiter of this.#take(match)) waiter.resolve();
  }

  /** Rejects every waiter whose channel matches. */
  reject(match: (channel: string) => boolean, error: Error): void {
    for (const waiter of this.#take(match)) waiter.reject(error);
  }

  #take(match: (channel: string) => boolean): Waiter[] {
    const taken = this.#waiters.filter((w) => match(w.channel));
    this.#waiters = this.#waiters.filter((w) => !match(w.channel));
    for (const waiter of taken) clearTimeout(waiter.timer);
    return taken;
  }

  #expire(waiter: Waiter): void {
    if (!this.#waiters.includes(waiter)) return;
    this.#waiters = this.#waiters.filter((w) => w !== waiter);
    waiter.reject(this.#expired(waiter.channel));
  }
}
