/**
 * A job worker that sleeps for long stretches between polls: the classic victim of idle
 * connections cut by the server's idle_session_timeout, a NAT gateway, a load balancer or a proxy.
 * With pg.Pool, the first query after such a sleep fails ("Connection terminated unexpectedly"),
 * or the process crashes on the idle client's 'error' event. With pg-lifeline the pool notices
 * the death while the worker sleeps, or probes the connection at checkout, and the job runs.
 *
 *   npx tsx examples/long-idle-worker.ts          polls every $WORKER_SLEEP_SECONDS (300) until SIGINT or SIGTERM
 *   npx tsx examples/long-idle-worker.ts --once   self-check: the server ends sessions idle for 1 s,
 *                                                 and the worker sleeps 2.5 s between jobs
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Pool } from 'pg-lifeline';
import { Checks, selfCheck, setIdleSessionTimeout } from './self-check.js';
import { runExample } from './throwaway.js';

const APP = 'example-long-idle-worker';
// Jobs done per wake-up at most, so one wake-up cannot run forever.
const BATCH = 100;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS jobs (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload text NOT NULL,
    run_at timestamptz NOT NULL DEFAULT now(),
    done_at timestamptz,
    result text);
`;

function createPool(url: string): Pool {
  return new Pool({
    connectionString: url,
    application_name: APP,
    // One job at a time: one connection, and one spare for finding out whether a COMMIT went
    // through if its connection dies during it.
    max: 2,
    // One connection stays open across sleeps, so a job starts without a connect (TCP, TLS,
    // auth). pg-lifeline reopens it when it dies, and probes it at checkout after a sleep.
    min: 1,
    // A connection beyond `min` closes after 30 s idle instead of holding a server slot all sleep.
    idleTimeoutMillis: 30_000,
    // The idle connection is pinged every 60 s (less up to 10 %). The traffic keeps NAT and load
    // balancer idle timers (often 4 to 6 minutes) from cutting it, and a dead one is found before
    // a job needs it. pg-lifeline lowers this below the server's idle_session_timeout by itself.
    keepaliveIntervalMillis: 60_000,
    // TCP keepalive on the socket as well, so the OS notices a peer that vanished without a word.
    keepAlive: true,
    keepAliveInitialDelayMillis: 30_000,
    // Connections are retired after 15 minutes (less up to 5 %): a worker that runs for weeks still
    // follows DNS changes and failovers, picks up rotated credentials, and stays under a proxy's
    // maximum connection age.
    maxLifetimeSeconds: 900,
    // A job that starts while the server restarts waits up to 30 s for it rather than failing.
    connectionTimeoutMillis: 30_000,
  });
}

/** Claims the next due job, does it and records the result, in one transaction. */
function doNextJob(pool: Pool): Promise<number | undefined> {
  // retry: the function only touches the database, so the pool may run it again when the
  // transaction certainly did not commit; a lost COMMIT is resolved by asking the server.
  return pool.transaction(
    async (client) => {
      const { rows } = await client.query<{ id: number; payload: string }>(
        'SELECT id, payload FROM jobs WHERE done_at IS NULL AND run_at <= now() ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED',
      );
      const job = rows[0];
      if (!job) return undefined;
      await client.query('UPDATE jobs SET done_at = now(), result = $2 WHERE id = $1', [job.id, job.payload.toUpperCase()]);
      return job.id;
    },
    { retry: true },
  );
}

/**
 * Wakes, does every due job, sleeps `sleepMs`; `cycles` times, or until `signal` aborts.
 * A failure is logged and the worker carries on; returns how many jobs were done and failed.
 */
async function work(pool: Pool, sleepMs: number, cycles: number, signal: AbortSignal): Promise<{ done: number; failed: number }> {
  const tally = { done: 0, failed: 0 };
  for (let cycle = 0; cycle < cycles && !signal.aborted; cycle++) {
    try {
      for (let n = 0; n < BATCH; n++) {
        const id = await doNextJob(pool);
        if (id === undefined) break;
        tally.done++;
        console.log(`job ${id}: done`);
      }
    } catch (error) {
      tally.failed++;
      console.log(`jobs failed: ${(error as Error).message}`);
    }
    if (cycle + 1 === cycles) break;
    const { total, idle, evictions, validations } = pool.stats();
    console.log(`sleeping ${sleepMs / 1000} s (pool: ${total} open, ${idle} idle; ${evictions.died} died so far; ${validations} probes)`);
    await delay(sleepMs, undefined, { signal }).catch(() => undefined); // an abort ends the sleep early
  }
  return tally;
}

/** The worker through idle sessions ended by the server: every job must be done, none fail. */
async function runSelfCheck(url: string, pool: Pool): Promise<void> {
  const checks = new Checks();
  // Four jobs due 2 s apart; the worker wakes every 2.5 s, so it does one per wake-up.
  const { rows } = await pool.query<{ id: number }>(
    "INSERT INTO jobs (payload, run_at) SELECT 'job ' || n, now() + n * interval '2 s' FROM generate_series(0, 3) AS n RETURNING id",
  );
  const ids = rows.map((row) => row.id);
  // Set after the pool read the server's settings at its first connection, so pg-lifeline's
  // keepalive pings do not know to stay under it: sessions die, as behind an unannounced proxy.
  await setIdleSessionTimeout(url, '1s');
  try {
    const { done, failed } = await work(pool, 2_500, ids.length, new AbortController().signal);
    const left = await pool.query<{ n: number }>({ text: 'SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND done_at IS NULL', values: [ids], idempotent: true });
    checks.ok(`${done} jobs done across ${ids.length - 1} sleeps past idle_session_timeout`, done === ids.length && failed === 0 && left.rows[0]?.n === 0, `${failed} failed`);
  } finally {
    await setIdleSessionTimeout(url, undefined);
  }
  const { evictions } = pool.stats();
  checks.ok('the server ended idle sessions while the worker slept', evictions.died > 0, `${evictions.died} died`);
  checks.finish();
}

async function main(url: string): Promise<void> {
  const pool = createPool(url);
  pool.on('evict', ({ reason, diagnosis }) => {
    if (reason !== 'pool-ended') console.log(`pool: closed a connection: ${reason}${diagnosis ? `: ${diagnosis.summary}` : ''}`);
  });
  pool.on('tuned', ({ keepaliveIntervalMillis, reason }) => console.log(`pool: keepalive every ${keepaliveIntervalMillis} ms: ${reason}`));
  try {
    await pool.query(SCHEMA);
    if (selfCheck) return await runSelfCheck(url, pool);
    await pool.query("INSERT INTO jobs (payload) SELECT 'job ' || n FROM generate_series(1, 3) AS n");
    console.log("3 jobs queued; add more in psql: INSERT INTO jobs (payload) VALUES ('hello');");
    const stop = new AbortController();
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => stop.abort());
    const sleepSeconds = Number(process.env['WORKER_SLEEP_SECONDS'] ?? 300);
    await work(pool, sleepSeconds * 1000, Number.POSITIVE_INFINITY, stop.signal);
    console.log('stopped');
  } finally {
    await pool.end();
  }
}

await runExample(main);
