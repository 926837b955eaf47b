// An app-level retry for what pg-lifeline cannot run again by itself: an ORM's transaction, which
// runs on a client the ORM checked out. (pool.transaction(fn, { retry: true }) retries on its own.)
import { setTimeout as delay } from 'node:timers/promises';
import { classifyFailure, isSafeToRetry } from 'pg-lifeline';

const ATTEMPTS = 4;
const BASE_DELAY_MS = 50;

/**
 * Runs `work` until it succeeds, again only after a retryable failure, at most ATTEMPTS times.
 * A failed transaction usually did not commit, but one whose connection died during COMMIT may
 * have. So the work must be safe to repeat either way: give each request its own key, and have a
 * repeat return what an earlier try saved under it.
 */
export async function withRetry<T>(what: string, work: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      // A lost connection, the server restarting, a serialization failure or a deadlock; never an
      // ordinary SQL error. pg-lifeline reads through ORM wrappers (Drizzle's DrizzleQueryError).
      // idempotent: true, because the caller vouches that a repeat is harmless (see above).
      if (attempt >= ATTEMPTS || !isSafeToRetry(error, { sent: true, idempotent: true })) throw error;
      const wait = Math.round(Math.random() * BASE_DELAY_MS * 2 ** attempt); // full jitter
      console.log(`${what}: try ${attempt} failed (${classifyFailure(error)}), trying again in ${wait} ms`);
      await delay(wait);
    }
  }
}
