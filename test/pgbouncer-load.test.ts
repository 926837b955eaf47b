// pg-lifeline through PgBouncer under load, in transaction and in session pooling: 8 loops of
// idempotent reads and retried transfers while every server backend is killed twice and PgBouncer
// is restarted once. Retry-safe work must never fail, and the ledger must reconcile exactly.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Pool, type EvictionEvent } from '../src/index.js';
import { PgCluster } from './harness/cluster.js';
import { Bouncer, pgbouncerBinary } from './harness/pgbouncer.js';
import { waitFor } from './harness/wait.js';

const noBouncer = !pgbouncerBinary() && 'pgbouncer is not installed (.ci/run installs it)';
const ACCOUNTS = 20;
const BALANCE = 1000;
const LOOPS = 8;
const RUN_MILLIS = 4_000;
// Hard bounds, should the fault sequence take longer than the run: time, and operations per loop.
const HARD_STOP_MILLIS = 20_000;
const MAX_OPS_PER_LOOP = 5_000;

interface Transfer {
  readonly id: string;
  readonly from: number;
  readonly to: number;
  readonly amount: number;
}

let cluster: PgCluster;
before(async () => {
  cluster = await PgCluster.start();
  await cluster.query(`
    CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
    CREATE TABLE transfer_log (id uuid NOT NULL, from_id int NOT NULL, to_id int NOT NULL, amount int NOT NULL);
  `);
});
after(() => cluster?.destroy());

function randomTransfer(): Transfer {
  const from = 1 + Math.floor(Math.random() * ACCOUNTS);
  const to = 1 + ((from + Math.floor(Math.random() * (ACCOUNTS - 1))) % ACCOUNTS);
  return { id: randomUUID(), from, to, amount: 1 + Math.floor(Math.random() * 10) };
}

for (const mode of ['transaction', 'session'] as const) {
  describe(`through PgBouncer in ${mode} pooling, under load`, { skip: noBouncer, timeout: 60_000 }, () => {
    let bouncer: Bouncer;
    before(async () => {
      await cluster.query(`TRUNCATE accounts, transfer_log; INSERT INTO accounts SELECT g, ${BALANCE} FROM generate_series(1, ${ACCOUNTS}) AS g`);
      // More server connections than the pool's max, so session pooling never queues a client.
      bouncer = await Bouncer.start(cluster, { poolMode: mode, defaultPoolSize: LOOPS + 2 });
    });
    after(() => bouncer?.destroy());

    test('backends killed twice and PgBouncer restarted: zero failures of retry-safe work, ledger exact', async (t) => {
      const pool = new Pool({ ...bouncer.clientConfig(), application_name: `pgbouncer-load-${mode}-${process.pid}`, max: LOOPS });
      const evicted: string[] = [];
      pool.on('evict', ({ reason, error }: EvictionEvent) => {
        // The failure as the client saw it (pg-lifeline's typed error keeps it as its cause).
        const seen = ((error as { cause?: unknown } | undefined)?.cause ?? error) as { code?: string; message?: string } | undefined;
        evicted.push(`${reason}: ${seen?.code ?? '-'} ${seen?.message ?? ''}`.trim());
      });
      const acked: Transfer[] = [];
      const failures: { op: string; error: unknown }[] = [];
      let reads = 0;
      let faultsDone = false;
      const started = Date.now();
      const running = (): boolean => (Date.now() < started + RUN_MILLIS || !faultsDone) && Date.now() < started + HARD_STOP_MILLIS && failures.length === 0;

      const transfer = async (): Promise<void> => {
        const tr = randomTransfer();
        // Locks taken in id order, so concurrent transfers never deadlock.
        const [first, second] = tr.from < tr.to ? [tr.from, tr.to] : [tr.to, tr.from];
        const delta = (id: number): number => (id === tr.from ? -tr.amount : tr.amount);
        try {
          await pool.transaction(
            async (client) => {
              await client.query('UPDATE accounts SET balance = balance + $2 WHERE id = $1', [first, delta(first)]);
              await client.query('UPDATE accounts SET balance = balance + $2 WHERE id = $1', [second, delta(second)]);
              await client.query('INSERT INTO transfer_log VALUES ($1, $2, $3, $4)', [tr.id, tr.from, tr.to, tr.amount]);
            },
            { retry: true },
          );
          acked.push(tr);
        } catch (error) {
          failures.push({ op: `transfer ${tr.id}`, error });
        }
      };
      const read = async (): Promise<void> => {
        try {
          const { rows } = await pool.query({ text: 'SELECT sum(balance)::int AS total, count(*)::int AS n FROM accounts WHERE id <= $1', values: [ACCOUNTS], idempotent: true });
          // One statement sees one snapshot: a transfer is either all in it or not at all.
          if (rows[0]?.total !== ACCOUNTS * BALANCE || rows[0]?.n !== ACCOUNTS) failures.push({ op: 'read', error: new Error(`read ${JSON.stringify(rows)}`) });
          reads++;
        } catch (error) {
          failures.push({ op: 'read', error });
        }
      };
      const loop = async (i: number): Promise<void> => {
        for (let n = 0; n < MAX_OPS_PER_LOOP && running(); n++) await ((n + i) % 2 === 0 ? read() : transfer());
      };

      // Each fault waits for fresh progress after the previous one, so each lands on busy loops.
      const progressed = (what: string): Promise<unknown> => {
        const mark = acked.length + reads;
        return waitFor(what, () => acked.length + reads >= mark + 40 || failures.length > 0, { timeoutMs: 15_000 });
      };
      const faults: string[] = [];
      const inject = async (): Promise<void> => {
        try {
          await progressed('the loops to get going');
          faults.push(`killed ${await cluster.terminateBackends()}`);
          await progressed('progress after the first kill');
          faults.push(`killed ${await cluster.terminateBackends()}`);
          await progressed('progress after the second kill');
          await bouncer.restart();
          faults.push('restarted PgBouncer');
          await progressed('progress after the restart');
        } finally {
          faultsDone = true;
        }
      };

      try {
        await Promise.all([inject(), ...Array.from({ length: LOOPS }, (_, i) => loop(i))]);
        const stats = pool.stats();
        t.diagnostic(`${mode}: ${acked.length} transfers, ${reads} reads in ${Date.now() - started} ms; faults: ${faults.join(', ')}`);
        t.diagnostic(`${mode}: retries ${JSON.stringify(stats.retriesByKind)}, commit resolutions ${JSON.stringify(stats.commitResolutions)}, evictions ${evicted.length}: ${[...new Set(evicted)].join(' | ')}`);

        assert.deepEqual(
          failures.map(({ op, error }) => `${op}: ${String(error)}`),
          [],
        );
        assert.equal(faults.length, 3, `faults injected: ${faults.join(', ')}`);
        // The restart closed every client connection: the pool saw deaths and replaced them.
        assert.ok(stats.evictions.died > 0, 'the pool saw its connections die');
        assert.ok(acked.length > 0 && reads > 0);

        // Reconcile: every acknowledged transfer logged exactly once, nothing else logged, and
        // every balance equal to what the acknowledged transfers make it.
        const logged = new Map((await cluster.query<{ id: string; n: number }>('SELECT id::text AS id, count(*)::int AS n FROM transfer_log GROUP BY id')).map((r) => [r.id, r.n]));
        const missing = acked.filter((tr) => !logged.has(tr.id)).map((tr) => tr.id);
        const twice = [...logged].filter(([, n]) => n !== 1).map(([id, n]) => `${id} x${n}`);
        assert.deepEqual({ missing, twice, rows: logged.size }, { missing: [], twice: [], rows: acked.length });
        const expected = new Map(Array.from({ length: ACCOUNTS }, (_, i) => [i + 1, BALANCE]));
        for (const tr of acked) {
          expected.set(tr.from, (expected.get(tr.from) ?? 0) - tr.amount);
          expected.set(tr.to, (expected.get(tr.to) ?? 0) + tr.amount);
        }
        const balances = await cluster.query<{ id: number; balance: string }>('SELECT id, balance::text AS balance FROM accounts ORDER BY id');
        assert.deepEqual(new Map(balances.map((r) => [r.id, Number(r.balance)])), expected);
        assert.equal(balances.reduce((sum, r) => sum + Number(r.balance), 0), ACCOUNTS * BALANCE);
      } finally {
        faultsDone = true;
        await pool.end();
      }
    });
  });
}
