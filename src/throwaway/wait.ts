import { setTimeout as delay } from 'node:timers/promises';

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/**
 * Polls `check` until it returns a value other than `undefined`/`false`, and returns that value.
 * Errors thrown by `check` count as "not yet" (a server that is still starting refuses connections),
 * and the last one is attached as `cause` when the deadline passes.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 20 }: WaitOptions = {},
): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as Exclude<T, false | undefined>;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() >= deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
    }
    await delay(intervalMs);
  }
}

/**
 * How `work` settled, or 'hung' if it had not within `millis`: a workload's guard against an
 * operation that never returns. The timer is cleared either way.
 */
export async function settleWithin(work: Promise<unknown>, millis: number): Promise<'ok' | 'hung' | { error: unknown }> {
  let timer: NodeJS.Timeout | undefined;
  const watchdog = new Promise<'hung'>((resolve) => (timer = setTimeout(() => resolve('hung'), millis)));
  try {
    return await Promise.race([work.then(() => 'ok' as const, (error: unknown) => ({ error })), watchdog]);
  } finally {
    clearTimeout(timer);
  }
}
