/**
 * A token bucket that caps retries at a share of traffic. Every request earns `ratio` of a token;
 * every retry spends one. The bucket starts full at `burst`, so a burst of failures (all backends
 * killed at once) is retried in full, while a server that keeps failing gets at most `ratio`
 * extra load instead of a retry storm.
 */
export class RetryBudget {
  readonly #ratio: number;
  readonly #burst: number;
  #tokens: number;

  constructor(ratio: number, burst: number) {
    this.#ratio = ratio;
    this.#burst = burst;
    this.#tokens = burst;
  }

  /** A request started. */
  earn(): void {
    this.#tokens = Math.min(this.#burst, this.#tokens + this.#ratio);
  }

  /** Takes one retry from the budget; false when it is spent. */
  spend(): boolean {
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
