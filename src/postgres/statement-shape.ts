// Whether a statement given to pool.query ran as one transaction, so that a serialization
// failure or a deadlock (which roll back only the transaction they hit) left nothing behind.
// Only the failure path asks, so the query hot path never parses SQL.

/**
 * True when `text` (and `values`), as `pool.query` got them, certainly ran as a single implicit
 * transaction on a session that was not inside one: nothing of it can have committed before an
 * error. The extended protocol (values, a name, `rows`, `queryMode: 'extended'`) carries one
 * statement; the simple protocol runs several as one transaction unless one of them controls
 * transactions. CALL and DO may commit inside, and some commands commit as they go (VACUUM,
 * CREATE INDEX CONCURRENTLY...). When the text cannot be read with certainty, the answer is false.
 */
export function ranAsOneTransaction(text: unknown, values: unknown): boolean {
  const shape = readShape(text, values);
  if (shape === undefined || shape.statements === undefined) return false;
  if (shape.extended && shape.statements.length > 1) return false;
  return shape.statements.every(isSingleTransactionStatement);
}

/**
 * How pool.query's `text` and `values` go to the server: over the extended protocol (one
 * statement) or the simple one, and the statements of the text (undefined when it cannot be read
 * with certainty). Undefined when there is no SQL text at all (a Submittable).
 */
export function readShape(text: unknown, values: unknown): { extended: boolean; statements: string[][] | undefined } | undefined {
  const config = typeof text === 'string' ? { text } : (text as QueryShape | null);
  const sql = config?.text;
  if (typeof sql !== 'string') return undefined;
  const bound = Array.isArray(values) ? values : config?.values;
  // pg's own rule for choosing the extended protocol (Query#requiresPreparation).
  const extended = config?.queryMode === 'extended' || Boolean(config?.name) || Boolean(config?.rows) || (sql !== '' && Array.isArray(bound) && bound.length > 0);
  return { extended, statements: splitStatements(sql) };
}

/** The fields of a pg query config that decide how it is sent. */
interface QueryShape {
  readonly text?: unknown;
  readonly values?: unknown;
  readonly name?: unknown;
  readonly rows?: unknown;
  readonly queryMode?: unknown;
}

// First words of commands that end, begin or split transactions, or commit as they go.
const UNSAFE_FIRST = new Set(['call', 'do', 'commit', 'end', 'rollback', 'abort', 'begin', 'start', 'savepoint', 'release', 'vacuum', 'analyze', 'analyse', 'cluster', 'reindex']);
// Second words that do the same after a common first word.
const UNSAFE_PAIRS = new Set(['prepare transaction', 'alter system', 'create database', 'drop database', 'create tablespace', 'drop tablespace', 'create subscription', 'alter subscription', 'drop subscription']);

function isSingleTransactionStatement(words: readonly string[]): boolean {
  const first = words[0];
  // Not a command we can name (a stray symbol): unsure.
  if (first === undefined || !/^[a-z_]/.test(first)) return false;
  if (UNSAFE_FIRST.has(first)) return false;
  if (UNSAFE_PAIRS.has(`${first} ${words[1] ?? ''}`)) return false;
  // CREATE/DROP INDEX CONCURRENTLY and the like commit between their phases.
  return !((first === 'create' || first === 'drop') && words.includes('concurrently'));
}

const WORD = /[A-Za-z0-9_$\u0080-\uffff]/;
const TAG_START = /[A-Za-z_\u0080-\uffff]/;

/**
 * The statements of `sql` at top level, each as its bare words, lower-cased (quoted text,
 * identifiers and comments dropped); `undefined` when the text cannot be read with certainty: an
 * unterminated quote or comment, or a backslash in a plain string, whose meaning depends on
 * `standard_conforming_strings`.
 */
export function splitStatements(sql: string): string[][] | undefined {
  const statements: string[][] = [];
  let words: string[] = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i] as string;
    const next = sql[i + 1];
    if (c === ';') {
      if (words.length > 0) statements.push(words);
      words = [];
      i++;
    } else if (c === '-' && next === '-') {
      const end = sql.indexOf('\n', i);
      i = end === -1 ? n : end + 1;
    } else if (c === '/' && next === '*') {
      const end = skipBlockComment(sql, i);
      if (end === undefined) return undefined;
      i = end;
    } else if (c === "'") {
      const escapes = i > 0 && /[eE]/.test(sql[i - 1] as string) && (i < 2 || !WORD.test(sql[i - 2] as string));
      const end = skipString(sql, i, escapes);
      if (end === undefined) return undefined;
      i = end;
    } else if (c === '"') {
      const end = sql.indexOf('"', i + 1);
      if (end === -1) return undefined;
      // A doubled quote inside an identifier just continues it.
      i = end + 1;
    } else if (c === '$' && (i === 0 || !WORD.test(sql[i - 1] as string)) && next !== undefined && (next === '$' || TAG_START.test(next))) {
      const close = sql.indexOf('$', i + 1);
      const tag = close === -1 ? '' : sql.slice(i, close + 1);
      if (close === -1 || !/^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$$/.test(tag)) {
        i++;
        continue;
      }
      const end = sql.indexOf(tag, close + 1);
      if (end === -1) return undefined;
      i = end + tag.length;
    } else if (WORD.test(c)) {
      let j = i + 1;
      while (j < n && WORD.test(sql[j] as string)) j++;
      words.push(sql.slice(i, j).toLowerCase());
      i = j;
    } else {
      // Punctuation counts as a word only where a command would start, so a leading one is noticed.
      if (words.length === 0 && !/\s/.test(c) && c !== '(') words.push(c);
      i++;
    }
  }
  if (words.length > 0) statements.push(words);
  return statements;
}

// Block comments nest in PostgreSQL.
function skipBlockComment(sql: string, start: number): number | undefined {
  let depth = 0;
  let i = start;
  while (i < sql.length) {
    if (sql.startsWith('/*', i)) {
      depth++;
      i += 2;
    } else if (sql.startsWith('*/', i)) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else i++;
  }
  return undefined;
}

function skipString(sql: string, start: number, escapes: boolean): number | undefined {
  let i = start + 1;
  while (i < sql.length) {
    const c = sql[i];
    if (c === '\\') {
      if (!escapes) return undefined;
      i += 2;
    } else if (c === "'") {
      if (sql[i + 1] !== "'") return i + 1;
      i += 2;
    } else i++;
  }
  return undefined;
}
