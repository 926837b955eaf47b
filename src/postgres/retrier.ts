import type { ResolvedRetry } from '../config.js';
import { fullJitterDelay } from '../core/backoff.js';
import { RetryBudget } from '../core/retry-budget.js';
import { now } from '../core/resource-pool.js';
import { AbortedError } from '../errors.js';
import { classifyFailure, type FailureKind } from './classify.js';

/** One try's result: a value, or a failure and whether it may be tried again. */
export type Attempt<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown; readonly retry: boolean };

/** Details of the `retry` event. */
export interface RetryEvent {
  /** The try that failed (1 for the first). */
  readonly attempt: number;
  readonly kind: FailureKind;
  readonly error: unknown;
  /** Backoff before the next try. */
  readonly delayMillis: number;
}

/** Where the retrier reports. */
export interface RetryObserver {
  retried(event: RetryEvent): void;
}

/**
 * Runs tries until one succeeds or a failure must reach the caller: not safe to retry, attempts
 * used up, past the retry deadline, the budget spent, or the caller's signal aborted.
 */
export class Retrier {
  readonly #settings: ResolvedRetry | false;
  readonly #budget: RetryBudget | undefined;
  readonly #observer: RetryObserver;

  constructor(settings: ResolvedRetry | false, observer: RetryObserver) {
    this.#settings = settings;
    this.#budget = settings === false ? undefined : new RetryBudget(settings.budgetRatio, settings.budgetBurst);
    this.#observer = observer;
  }

  /** Counts a request toward the retry budget. */
  earn(): void {
    this.#budget?.earn();
  }

  /** Continues after `first` failed: the fast path runs the first try itself, without this. */
  async retry<T>(first: Attempt<T>, again: () => Promise<Attempt<T>>, signal: AbortSignal | undefined, attempts?: number): Promise<T> {
    const started = now();
    let result = first;
    for (let attempt = 1; ; attempt++) {
      if (result.ok) return result.value;
      const settings = this.#settings;
      const limit = attempts ?? (settings === false ? 1 : settings.attempts);
      if (!result.retry || settings === false || attempt >= limit || signal?.aborted) throw result.error;
      const delayMillis = fullJitterDelay(attempt - 1, settings.baseDelayMillis, settings.maxDelayMillis);
      if (now() - started + delayMillis > settings.deadlineMillis || !this.#budget?.spend()) throw result.error;
      this.#observer.retried({ attempt, kind: classifyFailure(result.error), error: result.error, delayMillis });
      await sleep(delayMillis, signal);
      result = await again();
    }
  }
}

function sleep(millis: number, signal: AbortSignal | undefined): Promise<void> {
  if (millis <= 0 && signal === undefined) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new AbortedError('Waiting to retry', signal?.reason));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, millis);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
