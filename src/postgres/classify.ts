import { sqlStateOf } from '../errors.js';

/**
 * Which failures mean what. The pool uses these to decide whether a connection is dead,
 * whether the whole server is suspect, and whether opening connections is worth retrying.
 */

// Node socket errors after which the socket is unusable.
const SOCKET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNABORTED', 'ENOTCONN', 'EAI_AGAIN']);

// pg's own wording for a connection that died under it.
const DEAD_CONNECTION_MESSAGES = [
  'Connection terminated',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'timeout expired',
  'SSL connection has been closed unexpectedly',
];

// Server-side states that end a session: the session is gone, not just the statement.
const SESSION_ENDING_STATES = new Set(['57P01', '57P02', '57P03', '57P05', '25P03', '53300']);

/** True when `err` means the connection it happened on can no longer be used. */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { code?: unknown; severity?: unknown };
  if (e.severity === 'FATAL' || e.severity === 'PANIC') return true;
  const state = sqlStateOf(err);
  if (state !== undefined) return state.startsWith('08') || SESSION_ENDING_STATES.has(state);
  if (typeof e.code === 'string' && (SOCKET_CODES.has(e.code) || e.code.startsWith('ERR_SSL') || e.code.startsWith('ERR_TLS'))) return true;
  return DEAD_CONNECTION_MESSAGES.some((text) => e.message.startsWith(text));
}

/**
 * True when `err` suggests every connection to the server may be dead (shutdown, crash, reset,
 * the socket closing under us), rather than one session ending for its own reasons (an idle
 * timeout). The pool then validates every older connection before its next use.
 */
export function isServerWideFailure(err: unknown): boolean {
  const state = sqlStateOf(err);
  if (state !== undefined) return state === '57P01' || state === '57P02' || state === '57P03' || state.startsWith('08');
  return isConnectionError(err);
}

/**
 * True when opening a connection failed in a way retrying cannot fix: wrong credentials, no such
 * database or role, no permission to connect, or a TLS certificate that does not verify.
 */
export function isPermanentConnectError(err: unknown): boolean {
  const state = sqlStateOf(err);
  if (state !== undefined) return state.startsWith('28') || state === '3D000' || state === '42501' || state === '0A000';
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : '';
  return (
    code === 'DEPTH_ZERO_SELF_SIGNED_CERT' ||
    code === 'SELF_SIGNED_CERT_IN_CHAIN' ||
    code === 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' ||
    code === 'CERT_HAS_EXPIRED' ||
    code === 'ERR_TLS_CERT_ALTNAME_INVALID' ||
    message.includes('does not support SSL') ||
    message.startsWith('SASL:')
  );
}
