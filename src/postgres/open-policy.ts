// How failed opens are treated: which failures end the wait for everyone, and how far to back off
// between attempts for the others.
import { ConnectFailedError, CredentialProviderError } from '../errors.js';
import { classifyFailure, isConnectionError, isPermanentConnectError } from './classify.js';

// Opening backs off from this step while it fails, up to a ceiling that depends on what a retry
// costs: nothing when nothing listens (so retry often, and be back within tens of ms); a short-lived
// forked backend while the server starts up (a few dozen a second are nothing, and it is about to
// be back: the ceiling bounds how late the pool notices); a slot on a server that is full (back off
// further). Only one attempt is in flight while failing.

/** The first backoff step after a failed open. */
export const OPEN_RETRY_BASE_MILLIS = 25;
const RETRY_CAP_UNREACHABLE_MILLIS = 40;
const RETRY_CAP_STARTING_MILLIS = 40;
const RETRY_CAP_FULL_MILLIS = 1000;
const RETRY_CAP_OTHER_MILLIS = 250;

/** True when no retry can fix a failed open (credentials, database, TLS, a hook that threw): fail every waiter now. */
export function isFatalOpenError(error: unknown): boolean {
  return isPermanentConnectError(error) || !isConnectionError(error);
}

/** The backoff ceiling after an open failed with `error`. */
export function openRetryCapMillis(error: unknown): number {
  const kind = classifyFailure(error);
  if (kind === 'unreachable') return RETRY_CAP_UNREACHABLE_MILLIS;
  if (kind === 'server-starting') return RETRY_CAP_STARTING_MILLIS;
  return kind === 'too-many-connections' ? RETRY_CAP_FULL_MILLIS : RETRY_CAP_OTHER_MILLIS;
}

// Errors the app's onConnect and verify hooks threw: the pool rejects with them as they are, as pg.Pool does.
// Kept by error object, so nothing is written on the app's error or on pg's client.
const hookErrors = new WeakSet<object>();

/** Records that the app's `onConnect` or `verify` hook failed with `error`, and returns it. */
export function hookFailed(error: unknown): unknown {
  if (typeof error === 'object' && error !== null) hookErrors.add(error);
  return error;
}

/**
 * What waiters are rejected with after a fatal open error: an Error an app's hook threw, itself;
 * pg's refusal wrapped in a {@link ConnectFailedError} that keeps its code, message and fields.
 */
export function fatalOpenError(error: unknown): Error {
  if (error instanceof Error && hookErrors.has(error)) return error;
  // Already names the provider and its cause.
  if (error instanceof CredentialProviderError) return error;
  return new ConnectFailedError(error, advice(error));
}

function advice(error: unknown): string {
  if (!isPermanentConnectError(error)) return 'The onConnect or verify hook, or the connection settings, rejected the connection.';
  if (classifyFailure(error) === 'tls') {
    return "TLS failed, so retrying will not help: pass the CA that signed the server's certificate (ssl.ca, or sslrootcert in the URL), connect by a name the certificate lists, or run pg-lifeline doctor.";
  }
  return 'Retrying will not help: check the user, password, database name and TLS settings.';
}
