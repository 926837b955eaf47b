// Which failed `pool.query` calls leave a session the next user must not inherit. pg.Pool destroys
// the client after every failed pool.query, so stale session state never outlived one failure
// there. pg-lifeline keeps the connection after ordinary SQL errors (a unique violation says
// nothing about the session), so it retires it only after the failures that do.
import { readShape } from './statement-shape.js';

/**
 * True when a `pool.query` that failed with `error` (a SQL error, the session still up) may have
 * left its session stale or holding something: the connection is then closed, not reused.
 * - 26000: pg believes a named statement is prepared that the server no longer has
 *   (`DEALLOCATE ALL`, `DISCARD ALL`); every later call by that name would fail the same way.
 * - 0A000 "cached plan must not change result type": a named statement prepared before a schema
 *   change; the server keeps refusing it on this session.
 * - A simple-protocol script of several statements (or one that cannot be read with certainty):
 *   statements before the failing one may have set session state, taken session advisory locks,
 *   made temp tables or LISTENed, none of which an error undoes.
 */
export function leavesStaleSession(error: unknown, text: unknown, values: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  if (code === '26000') return true;
  if (code === '0A000' && typeof message === 'string' && message.includes('cached plan must not change result type')) return true;
  const shape = readShape(text, values);
  // The extended protocol carries exactly one statement.
  if (shape === undefined || shape.extended) return false;
  return shape.statements === undefined || shape.statements.length > 1;
}
