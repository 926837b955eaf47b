// What pool.listen() tells the app when a LISTEN cannot start: each message says what to do.
import type { Diagnosis } from '../diagnostics/diagnose.js';
import { ListenError } from '../errors.js';
import { classifyFailure } from './classify.js';

/** Quotes a channel name as an identifier: LISTEN takes it exactly as pg_notify() is given it. */
export function quoteChannel(channel: string): string {
  return `"${channel.replace(/"/g, '""')}"`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The server refused `LISTEN channel` with `error` (a standby, most often). */
export function refusedError(channel: string, error: unknown): ListenError {
  const message = messageOf(error);
  const standby = (error as { code?: unknown } | null)?.code === '25006' || /during recovery/.test(message);
  return new ListenError(
    `LISTEN ${quoteChannel(channel)} was refused: ${message}. ` +
      (standby
        ? 'The server is a standby (in recovery), and only a primary sends notifications. Point the pool at the primary, or give it every host (host=a,b) so the LISTEN session follows the primary.'
        : 'LISTEN needs a primary server (not a standby) and a direct or session-pooled connection.'),
    error,
  );
}

/** A first LISTEN on `channel` outlived `timeoutMillis`; `failure` is why the session last failed to open, if it did. */
export function timedOutError(channel: string, timeoutMillis: number, failure: { error: unknown; diagnosis: Diagnosis } | undefined): ListenError {
  const waited = `LISTEN ${quoteChannel(channel)} did not succeed within connectionTimeoutMillis (${timeoutMillis} ms)`;
  if (failure === undefined) return new ListenError(`${waited}: the LISTEN session was still opening.`, undefined);
  const message = messageOf(failure.error);
  if (classifyFailure(failure.error) === 'too-many-connections') {
    return new ListenError(
      `${waited}: the server has no connection slots left (${message}; max_connections). The LISTEN session needs a connection ` +
        "of its own, beside the pool's max: lower max across app instances, raise max_connections, or close other clients.",
      failure.error,
    );
  }
  return new ListenError(`${waited}: the session could not be opened (${why(failure.error, failure.diagnosis)}).`, failure.error);
}

/** The LISTEN session failed to open for a reason no retry fixes: what first-time waiters and listening listeners are told. */
export function openFailedErrors(error: unknown, diagnosis: Diagnosis): { waiting: ListenError; listening: ListenError } {
  const reason = why(error, diagnosis);
  return {
    waiting: new ListenError(`LISTEN could not start: the session could not be opened (${reason}).`, error),
    listening: new ListenError(`Could not open the LISTEN session (${reason}). It is retried every few seconds.`, error),
  };
}

function why(error: unknown, diagnosis: Diagnosis): string {
  return `${messageOf(error)}: ${diagnosis.summary}; ${diagnosis.advice}`;
}
