/**
 * Exponential backoff with full jitter: a random delay between 0 and min(cap, base * 2^attempt).
 * Full jitter spreads many clients' retries evenly instead of letting them retry in step.
 */
export function fullJitterDelay(attempt: number, baseMillis: number, capMillis: number): number {
  const ceiling = Math.min(capMillis, baseMillis * 2 ** Math.min(attempt, 30));
  return Math.random() * ceiling;
}

/** `value` reduced by a random fraction of up to `fraction`, so many timers do not fire together. */
export function minusJitter(value: number, fraction: number): number {
  return value * (1 - Math.random() * fraction);
}
