// pg's side of the error contract: which error pg.Pool would have rejected with, its code, its
// message, and the fields apps read off it. Kept apart from errors.ts, which builds on it.

/** The fields pg's DatabaseError (and a Node.js system error) carries besides `code` and `message`. */
export interface PgErrorFields {
  readonly severity?: string;
  readonly detail?: string;
  readonly hint?: string;
  readonly position?: string;
  readonly internalPosition?: string;
  readonly internalQuery?: string;
  readonly where?: string;
  readonly schema?: string;
  readonly table?: string;
  readonly column?: string;
  readonly dataType?: string;
  readonly constraint?: string;
  readonly file?: string;
  readonly line?: string;
  readonly routine?: string;
  readonly errno?: number;
  readonly syscall?: string;
  readonly address?: string;
  readonly port?: number;
}

const FIELDS: readonly (keyof PgErrorFields)[] = [
  'severity',
  'detail',
  'hint',
  'position',
  'internalPosition',
  'internalQuery',
  'where',
  'schema',
  'table',
  'column',
  'dataType',
  'constraint',
  'file',
  'line',
  'routine',
  'errno',
  'syscall',
  'address',
  'port',
];

// How many wrappers deep to look: enough for an ORM over a driver, and no cycle can loop.
const MAX_WRAPPERS = 4;

/** True for pg-lifeline's own errors, and for errors rebuilt from them that kept `lifelineCode`. */
export function isOwnError(err: unknown): boolean {
  return typeof (err as { lifelineCode?: unknown } | null)?.lifelineCode === 'string';
}

/**
 * The error pg (or Node.js, or the app's hook) raised under `err`: `err` itself when it is not
 * pg-lifeline's, else the first such error down its `cause` chain; undefined when there is none.
 */
export function pgOrigin(err: unknown): Error | undefined {
  let inner = err;
  for (let depth = 0; depth <= MAX_WRAPPERS && inner !== undefined; depth++) {
    if (!isOwnError(inner)) return inner instanceof Error ? inner : undefined;
    inner = (inner as Error).cause;
  }
  return undefined;
}

/** pg's `code` on `err` (an SQLSTATE, errno or TLS code), never one of pg-lifeline's own. */
export function pgCodeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && code !== '' && !code.startsWith('PGL_') ? code : undefined;
}

/** Copies pg's fields from `from` onto `to`, where `from` has them. */
export function copyPgFields(to: object, from: Error | undefined): void {
  if (from === undefined) return;
  const source = from as unknown as Record<string, unknown>;
  for (const field of FIELDS) if (source[field] !== undefined) Object.assign(to, { [field]: source[field] });
}

/** pg's text first, then pg-lifeline's: the message apps match keeps its start. */
export function leadWith(pgText: string, ours: string): string {
  if (pgText === '') return ours;
  return /[.!?:]$/.test(pgText) ? `${pgText} ${ours}` : `${pgText}. ${ours}`;
}

/** The SQLSTATE of a server error, if `err` is one. */
export function sqlStateOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * The error inside any bare wrappers around `err` (an Error with a `cause` and no code of its
 * own, as Drizzle's DrizzleQueryError wraps pg's error); `err` itself when it is not one.
 */
export function unwrap(err: unknown): unknown {
  let inner = err;
  for (let depth = 0; depth < MAX_WRAPPERS; depth++) {
    const e = inner as { code?: unknown; cause?: unknown } | null;
    if (!(inner instanceof Error) || e?.code !== undefined || e?.cause === undefined) break;
    inner = e.cause;
  }
  return inner;
}

/** `err`'s message, led by its code when the message does not say it. */
export function errorText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${code} ${err.message}` : err.message;
  }
  return String(err);
}
