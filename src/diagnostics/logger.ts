/** A pino-, console- or winston-shaped logger: any of these methods, each optional. */
export interface Logger {
  debug?(...args: unknown[]): void;
  info?(...args: unknown[]): void;
  warn?(...args: unknown[]): void;
  error?(...args: unknown[]): void;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/**
 * Writes one line to `logger`, if it has a method for `level`. pino takes the fields first and
 * the message second; console and winston take the message first. Fields never hold passwords
 * or query values: callers pass only pool facts.
 */
export function writeLog(logger: Logger | undefined, level: LogLevel, message: string, fields: Record<string, unknown>): void {
  const method = logger?.[level];
  if (typeof method !== 'function') return;
  const levels = (logger as { levels?: { values?: unknown } }).levels;
  if (typeof levels === 'object' && levels !== null && 'values' in levels) method.call(logger, fields, message);
  else method.call(logger, `pg-lifeline: ${message}`, fields);
}
