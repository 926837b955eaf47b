// What both parity files share: the two implementations, one cluster per file, and pool helpers.
import { after, before } from 'node:test';
import pg from 'pg';
import { Pool, type PoolOptions } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';

export type Impl = 'pg.Pool' | 'pg-lifeline';
export type Options = pg.PoolConfig & Record<string, unknown>;
export const implementations: { name: Impl; make: (o: Options) => pg.Pool }[] = [
  { name: 'pg.Pool', make: (o) => new pg.Pool(o) },
  { name: 'pg-lifeline', make: (o) => new Pool(o as PoolOptions) as unknown as pg.Pool },
];

let current: PgCluster | undefined;
let seq = 0;

/** Starts one cluster for the calling test file (before/after hooks) and returns its accessor. */
export function useCluster(): () => PgCluster {
  before(async () => {
    current = await PgCluster.start();
  });
  after(() => current?.destroy());
  return () => {
    if (current === undefined) throw new Error('the cluster is not started yet');
    return current;
  };
}

export const pid = (client: unknown): number => (client as { processID: number }).processID;

// Not events.once: it rejects when the pool emits 'error', which some tests provoke on purpose.
export const nextEvent = (emitter: pg.Pool, event: string): Promise<unknown[]> =>
  new Promise((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args)));

export async function backendPid(pool: pg.Pool): Promise<number> {
  return (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}

/** Rejects instead of hanging if `promise` never settles (pg.Pool's end() waits forever for checked-out clients). */
export function bounded<T>(promise: Promise<T>, what: string, ms = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([promise, guard]).finally(() => clearTimeout(timer));
}

/** Runs `body` with a fresh pool of its own application_name, and always ends the pool. */
export async function withPool(
  impl: (typeof implementations)[number],
  options: Options,
  body: (pool: pg.Pool, app: string) => Promise<void>,
): Promise<void> {
  const app = `parity-${process.pid}-${++seq}`;
  const pool = impl.make({ ...(current as PgCluster).clientConfig(), application_name: app, ...options });
  let failed = false;
  try {
    await body(pool, app);
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    if (!pool.ending) {
      const ended = bounded(pool.end(), 'pool.end()');
      await (failed ? ended.catch(() => undefined) : ended);
    }
  }
}
