// Self-check mode (`--once` or EXAMPLE_ONCE=1): a bounded, non-interactive run of an example that
// injects real faults into the server and exits non-zero unless every step succeeded. The faults
// go through plain SQL on an admin connection, so they also work against a DATABASE_URL server,
// given the rights: pg_terminate_backend on the example's own sessions, and superuser for
// ALTER SYSTEM (the long-idle worker). Point it at a throwaway or development server only.
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import type { Pool } from 'pg-lifeline';

export const selfCheck = process.argv.includes('--once') || process.env['EXAMPLE_ONCE'] === '1';

/** The admin connection's application_name, so that faults never target it. */
const ADMIN_APP = 'pg-lifeline-examples-admin';
const POLL_MS = 20;
const POLLS = 250; // 5 s

async function withAdmin<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url, application_name: ADMIN_APP, connectionTimeoutMillis: 10_000 });
  client.on('error', () => undefined); // a failure also rejects the pending query, which reports it
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Polls `done` until it is true; throws after POLLS tries. */
async function until(what: string, done: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < POLLS; i++) {
    if (await done()) return;
    await delay(POLL_MS);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Terminates the sessions chosen by `where` (SQL over pg_stat_activity, `$1` bound to `param`)
 * and waits until they are gone: pg_terminate_backend only sends a signal.
 */
function terminate(url: string, where: string, param: string | number): Promise<number[]> {
  return withAdmin(url, async (client) => {
    // Two statements: within one, the planner may call pg_terminate_backend before the filter.
    const chosen = await client.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE ${where} AND pid <> pg_backend_pid()`, [param]);
    const { rows } = await client.query<{ pid: number }>('SELECT pid FROM unnest($1::int[]) AS pid WHERE pg_terminate_backend(pid)', [
      chosen.rows.map((row) => row.pid),
    ]);
    const pids = rows.map((row) => row.pid);
    await until(`sessions ${pids.join(', ')} to exit`, async () => {
      const left = await client.query('SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1::int[])', [pids]);
      return left.rowCount === 0;
    });
    return pids;
  });
}

/** Terminates every session of `applicationName`; returns how many there were. */
export async function terminateApp(url: string, applicationName: string): Promise<number> {
  return (await terminate(url, 'application_name = $1', applicationName)).length;
}

/** Terminates one session, as if an admin or a failover ended it. */
export async function terminatePid(url: string, pid: number): Promise<void> {
  await terminate(url, 'pid = $1', pid);
}

/**
 * Runs `work` while a lock on `table` blocks writes to it; once a session of `applicationName`
 * waits for that lock, terminates it, then lets go. The session dies in the middle of a
 * transaction with a statement in flight, at a moment the self-check chooses rather than by luck.
 */
export function terminateBlocked<T>(url: string, table: string, applicationName: string, work: () => Promise<T>): Promise<T> {
  if (!/^[a-z_][a-z0-9_]*$/.test(table)) throw new Error(`not a plain table name: ${table}`);
  return withAdmin(url, async (locker) => {
    await locker.query('BEGIN');
    // SHARE blocks UPDATE, DELETE and INSERT on the table; reads and foreign-key checks go on.
    await locker.query(`LOCK TABLE ${table} IN SHARE MODE`);
    const result = work();
    result.catch(() => undefined); // awaited below; this keeps an early failure from counting as unhandled
    let pid: number | undefined;
    await until(`a session of ${applicationName} to wait for the lock`, async () => {
      const { rows } = await locker.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        [applicationName],
      );
      pid = rows[0]?.pid;
      return pid !== undefined;
    });
    await terminatePid(url, pid!);
    await locker.query('COMMIT');
    return result;
  });
}

/**
 * Sets the server's idle_session_timeout (undefined resets it) and waits until new sessions get
 * it. Sessions already idle pick it up after their next statement.
 */
export function setIdleSessionTimeout(url: string, value: string | undefined): Promise<void> {
  // ALTER SYSTEM takes no parameters, so the value is checked before it goes into the SQL text.
  if (value !== undefined && !/^\d+(ms|s|min)?$/.test(value)) throw new Error(`not a duration: ${value}`);
  return withAdmin(url, async (client) => {
    await client.query(value === undefined ? 'ALTER SYSTEM RESET idle_session_timeout' : `ALTER SYSTEM SET idle_session_timeout = '${value}'`);
    const { rows } = await client.query<{ at: string }>('SELECT clock_timestamp()::text AS at');
    await client.query('SELECT pg_reload_conf()');
    // pg_conf_load_time() is inherited by new sessions from the postmaster, so a fresh session
    // that shows a later load time has the new value.
    await until('the configuration to reload', () =>
      withAdmin(url, async (fresh) => {
        const check = await fresh.query<{ ok: boolean }>('SELECT pg_conf_load_time() > $1::timestamptz AS ok', [rows[0]?.at]);
        return check.rows[0]?.ok === true;
      }),
    );
  });
}

/** The outcome of each self-check step, printed as it is decided. */
export class Checks {
  #failed = 0;

  ok(label: string, pass: boolean, detail?: string): void {
    console.log(`${pass ? 'ok  ' : 'FAIL'} ${label}${detail === undefined ? '' : ` (${detail})`}`);
    if (!pass) this.#failed++;
  }

  /** Prints the verdict and sets the exit code. */
  finish(): void {
    console.log(this.#failed === 0 ? 'self-check passed' : `self-check FAILED: ${this.#failed} step(s)`);
    if (this.#failed > 0) process.exitCode = 1;
  }
}

/** Fails the self-check if it outlives `ms`, whatever it is stuck on; the throwaway server is stopped on exit. */
export function watchdog(ms: number): void {
  setTimeout(() => {
    console.log(`self-check FAILED: still running after ${ms} ms`);
    process.exit(1);
  }, ms).unref();
}

/** What an order-taking example (drizzle-app, kysely-app) gives the shared self-check. */
export interface OrderShop {
  /** The pool's application_name: the faults end its sessions. */
  readonly app: string;
  readonly pool: Pool;
  placeOrder(requestId: string, product: string, quantity: number): Promise<{ id: unknown }>;
  stockOf(product: string): Promise<number | undefined>;
  ordersFor(requestId: string): Promise<number>;
  /** Whether an order failed for want of stock (which is never retried). */
  refused(error: unknown): boolean;
}

/**
 * The ORM examples' self-check, run after their first order (`${run}-1`, 2 of `widget`'s 10): a
 * session ended mid-transaction, a repeated request, every idle session ended, an order refused.
 */
export async function checkOrders(url: string, shop: OrderShop, run: string, widget: string): Promise<void> {
  const checks = new Checks();
  checks.ok('insert, select and a transaction', (await shop.stockOf(widget)) === 8 && (await shop.ordersFor(`${run}-1`)) === 1);

  // The session dies inside the transaction, its UPDATE in flight: the app's retry runs it again.
  const order = await terminateBlocked(url, 'products', shop.app, () => shop.placeOrder(`${run}-2`, widget, 3));
  checks.ok('session terminated mid-transaction, the retry placed the order once', (await shop.stockOf(widget)) === 5 && (await shop.ordersFor(`${run}-2`)) === 1);

  const repeat = await shop.placeOrder(`${run}-2`, widget, 3);
  checks.ok('a repeated request returns its order and takes no more stock', repeat.id === order.id && (await shop.stockOf(widget)) === 5);

  const killed = await terminateApp(url, shop.app);
  await shop.placeOrder(`${run}-3`, widget, 1);
  checks.ok(`${killed} idle session(s) terminated, then a select and an order`, killed > 0 && (await shop.stockOf(widget)) === 4);

  const refused = await shop.placeOrder(`${run}-4`, widget, 99).then(
    () => false,
    (error: unknown) => shop.refused(error),
  );
  checks.ok('an order beyond the stock is refused, not retried', refused && (await shop.ordersFor(`${run}-4`)) === 0);
  const stats = shop.pool.stats();
  console.log(`pool: ${stats.evictions.died} connections died, ${stats.failedValidations} failed checks, ${stats.retries} retries`);
  checks.finish();
}
