/**
 * A first look: plain pg.Pool and pg-lifeline side by side on a throwaway PostgreSQL, while
 * backends are killed and the server restarts. Run with `npm start`.
 */
import pg from 'pg';
import { Pool } from '../src/index.js';
import { PgCluster } from '../test/harness/cluster.js';

const WORKERS = 4;
const GAP_MILLIS = 20;

interface Tally {
  ok: number;
  errors: Map<string, number>;
  errorEvents: number;
}

const cluster = await PgCluster.start();
const settings = { ...cluster.clientConfig(), max: WORKERS };
const plain = new pg.Pool({ ...settings, application_name: 'plain-pg' });
const lifeline = new Pool({ ...settings, application_name: 'pg-lifeline' });
const tallies = new Map<string, Tally>();

// pg.Pool crashes the process on an idle client's death unless someone listens; count instead.
for (const [name, pool] of [['pg.Pool', plain], ['pg-lifeline', lifeline]] as Array<[string, pg.Pool]>) {
  const tally: Tally = { ok: 0, errors: new Map(), errorEvents: 0 };
  tallies.set(name, tally);
  pool.on('error', () => tally.errorEvents++);
}

let running = true;
async function worker(name: string, pool: pg.Pool): Promise<void> {
  const tally = tallies.get(name) as Tally;
  while (running) {
    try {
      // A read: safe to repeat, so pg-lifeline may retry it (pg ignores the flag).
      await pool.query({ text: 'SELECT 1', idempotent: true } as pg.QueryConfig);
      tally.ok++;
    } catch (error) {
      const e = error as Error & { code?: string };
      const key = `${e.code ?? e.name}: ${e.message.split('\n')[0]?.slice(0, 90)}`;
      tally.errors.set(key, (tally.errors.get(key) ?? 0) + 1);
    }
    await new Promise((resolve) => setTimeout(resolve, GAP_MILLIS));
  }
}

try {
  const workers = [...Array(WORKERS)].flatMap(() => [worker('pg.Pool', plain), worker('pg-lifeline', lifeline)]);
  for (let round = 1; round <= 3; round++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const killed = await cluster.terminateBackends();
    console.log(`round ${round}: killed ${killed} backends (pg_terminate_backend)`);
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  console.log('restarting the server (pg_ctl restart -m fast)');
  await cluster.restart('fast');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  running = false;
  await Promise.all(workers);

  console.log('\nresult');
  for (const [name, tally] of tallies) {
    const failed = [...tally.errors.values()].reduce((a, b) => a + b, 0);
    const note = name === 'pg.Pool' ? 'each one crashes an app that has no listener' : 'sent only because a listener is attached; without one nothing is emitted';
    console.log(`  ${name.padEnd(12)} ok ${String(tally.ok).padStart(5)}  failed ${String(failed).padStart(3)}  pool 'error' events ${tally.errorEvents} (${note})`);
    for (const [message, count] of tally.errors) console.log(`      ${count} x ${message}`);
  }
  console.log(`\npg-lifeline stats: ${JSON.stringify(lifeline.stats().evictions)}`);
  console.log('pg-lifeline retried the reads that a kill or the restart cut off; see docs/retry.md for what is retried and what never is.');
} finally {
  await Promise.allSettled([plain.end(), lifeline.end()]);
  await cluster.destroy();
}
