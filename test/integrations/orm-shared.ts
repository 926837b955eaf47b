// Helpers for the ORM suites (Drizzle, Kysely, TypeORM, Knex): a pool per test, kills aimed at its
// backends, and the checks that the pool came through a fault healthy and let nothing escape to the process.
import assert from 'node:assert/strict';
import { Pool, type PoolOptions, type PoolStats } from '../../src/index.js';
import type { PgCluster } from '../harness/cluster.js';
import { waitFor } from '../harness/wait.js';

/** `payments` has no unique key: a transaction that committed twice would leave two rows. */
export const SCHEMA = `
  CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);
  CREATE TABLE payments (ref text NOT NULL, amount int NOT NULL);
`;

export interface TestPool {
  readonly pool: Pool;
  /** The pool's application_name, so that kills hit its backends and nobody else's. */
  readonly app: string;
}

let poolSeq = 0;

/**
 * Runs `fn` with a fresh pool and always ends it (unless the library already did). Fails the test
 * if an unhandled rejection or an uncaught exception reached the process meanwhile.
 */
export async function withPool(cluster: PgCluster, options: PoolOptions, fn: (t: TestPool) => Promise<void>): Promise<void> {
  const app = `orm-${process.pid}-${++poolSeq}`;
  const pool = new Pool({ ...cluster.clientConfig(), application_name: app, ...options });
  const escaped: unknown[] = [];
  const record = (error: unknown): void => void escaped.push(error);
  // The monitor variant observes an uncaught exception without stopping the crash it causes.
  process.on('unhandledRejection', record).on('uncaughtExceptionMonitor', record);
  try {
    await fn({ pool, app });
  } finally {
    process.off('unhandledRejection', record).off('uncaughtExceptionMonitor', record);
    if (!pool.ending) await pool.end();
  }
  assert.deepEqual(escaped, [], 'nothing may reach the process as an unhandled error');
}

/** Opens `n` connections at once and gives them back, so that `n` backends exist; returns their pids. */
export async function warm(cluster: PgCluster, { pool, app }: TestPool, n: number): Promise<number[]> {
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()));
  for (const client of clients) client.release();
  const pids = await cluster.backendPids(app);
  assert.equal(pids.length, n);
  return pids;
}

/** Terminates one backend from the admin connection and waits until the pool has seen it die. */
export async function terminate(cluster: PgCluster, pool: Pool, pid: number): Promise<void> {
  const before = pool.stats().invalidations;
  await cluster.query('SELECT pg_terminate_backend($1)', [pid]);
  await waitFor(`the pool to see backend ${pid} die`, () => pool.stats().invalidations > before);
}

/**
 * Sends each backend SIGTERM, which is what pg_terminate_backend does, and blocks the thread until
 * they have exited. Their goodbyes are then waiting on the sockets, but with the event loop
 * blocked the pool cannot have read them: the app's next statements go out on dead connections.
 */
export function killBlocking(pids: readonly number[]): void {
  for (const pid of pids) process.kill(pid, 'SIGTERM');
  const cell = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + 10_000;
  while (pids.some(isAlive)) {
    if (Date.now() > deadline) throw new Error(`backends ${pids.join(', ')} did not exit`);
    Atomics.wait(cell, 0, 0, 5);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Waits until a statement of backend `pid` is running, so that a kill lands in the middle of it. */
export async function running(cluster: PgCluster, pid: number): Promise<void> {
  await waitFor(`backend ${pid} to run a statement`, async () => {
    const rows = await cluster.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`, [pid]);
    return rows.length === 1;
  });
}

/** Waits until nothing is checked out or waited for, and returns the pool's stats then. */
export async function settled(pool: Pool): Promise<PoolStats> {
  await waitFor('every connection back in the pool', () => pool.waitingCount === 0 && pool.idleCount === pool.totalCount);
  const stats = pool.stats();
  assert.equal(stats.active, 0, 'no checked-out connection is left behind');
  return stats;
}

/** Rows of `payments` with `ref`, read on the admin connection. */
export async function paymentCount(cluster: PgCluster, ref: string): Promise<number> {
  const rows = await cluster.query<{ n: number }>('SELECT count(*)::int AS n FROM payments WHERE ref = $1', [ref]);
  return rows[0]?.n ?? 0;
}

/**
 * Runs `n` of a library's transactions at once, each held open until all have begun: a
 * transaction holds its connection, so `n` connections (and backends) then exist.
 */
export async function holdTransactions(n: number, transaction: (body: () => Promise<void>) => Promise<unknown>): Promise<void> {
  let inside = 0;
  let open: () => void = () => undefined;
  const allOpen = new Promise<void>((resolve) => (open = resolve));
  await Promise.all(
    Array.from({ length: n }, () =>
      transaction(async () => {
        if (++inside === n) open();
        await allOpen;
      }),
    ),
  );
}
