// The pool settings the doctor compares with the server: pg-lifeline's defaults, a --config module's
// `poolOptions`, and the flags (which win).
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { PoolNumbers } from './util.js';

/** pg-lifeline's own defaults (README, "Options"). */
export const POOL_DEFAULTS = {
  idleTimeoutMillis: 10_000,
  maxLifetimeSeconds: 1800,
  keepaliveIntervalMillis: 60_000,
  min: 0,
  max: 10,
  monitorGraceMillis: 2000,
  monitorDetectionMillis: 10_000,
  query_timeout: 0,
} as const;

/** A --config module that cannot be loaded or holds a bad value: a usage error. */
export class PoolConfigError extends Error {}

type Numbers = Partial<Record<keyof typeof POOL_DEFAULTS, number>>;

/** Imports `file` and returns the numbers of its `poolOptions` (or default) export; connection settings are ignored. */
export async function loadPoolConfig(file: string): Promise<Numbers> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path.resolve(file)).href)) as Record<string, unknown>;
  } catch (error) {
    throw new PoolConfigError(`cannot load --config ${file}: ${(error as Error).message.split('\n')[0]}`);
  }
  const fallback = mod['default'] as Record<string, unknown> | undefined;
  const options = mod['poolOptions'] ?? (fallback && typeof fallback === 'object' && 'poolOptions' in fallback ? fallback['poolOptions'] : fallback);
  if (options === null || typeof options !== 'object') {
    throw new PoolConfigError(`--config ${file} has no \`poolOptions\` or default export that is a Pool options object`);
  }
  const o = options as Record<string, unknown>;
  const numbers: Numbers = {};
  for (const key of Object.keys(POOL_DEFAULTS) as Array<keyof typeof POOL_DEFAULTS>) {
    let value = o[key];
    if (key === 'idleTimeoutMillis' && value === null) value = 0; // pg: null means never
    if (key === 'max' && value === undefined) value = o['poolSize'];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !(value >= 0) || (!Number.isFinite(value) && key !== 'maxLifetimeSeconds')) {
      throw new PoolConfigError(`--config ${file}: poolOptions.${key} is ${JSON.stringify(value)}, not a number ≥ 0`);
    }
    numbers[key] = value;
  }
  return numbers;
}

export function poolNumbers(config: Numbers | undefined, configFile: string | undefined, flags: Numbers): PoolNumbers {
  const merged = { ...POOL_DEFAULTS, ...config, ...flags };
  const flagged = Object.keys(flags).length > 0;
  const source = configFile !== undefined ? `${configFile}${flagged ? ' and flags' : ''}` : flagged ? 'flags and pg-lifeline defaults' : 'pg-lifeline defaults';
  return { ...merged, source };
}
