// Failover with real streaming replication: a bounded workload through a read-write pool while
// the standby is promoted and the primary goes away. Synchronous replication makes "acknowledged"
// mean "on the standby", so no acknowledged write may be missing after the failover.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import { Pool, isOutcomeUnknown } from '../src/index.js';
import { ReplicaSet } from './harness/replication.js';
import { waitFor } from './harness/wait.js';

const WORKERS = 8;
const RUN_MILLIS = 7000;

interface Figures {
  promotionToFirstWriteMillis: number;
  retrySafeFailures: string[];
  unknownOutcomes: number;
  ackedMissing: number;
  acked: number;
  writesToStandby: number;
}

async function failover(order: 'promote-then-stop' | 'stop-then-promote'): Promise<Figures> {
  const set = await ReplicaSet.start({ settings: { synchronous_standby_names: '*', synchronous_commit: 'on' } });
  // The standby inherits the primary's settings; once promoted it must not wait for a standby of its own.
  await set.standby.setSetting('synchronous_standby_names', '');
  await set.primary.query('CREATE TABLE acked (id uuid PRIMARY KEY)');
  await set.waitForReplay();
  const pool = new Pool({
    connectionString: `postgres://postgres:${set.primary.password}@127.0.0.1:${set.primary.port},127.0.0.1:${set.standby.port}/postgres?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=${encodeURIComponent(set.primary.caFile ?? '')}`,
    max: 10,
    query_timeout: 2000,
    hostRecheckMillis: 500,
  });
  const acked: string[] = [];
  const retrySafeFailures: string[] = [];
  let unknownOutcomes = 0;
  let writesToStandby = 0;
  let promotedAt = Infinity;
  let firstWriteAfterPromotion = Infinity;
  const started = performance.now();
  const write = async (): Promise<void> => {
    const id = randomUUID();
    const kind = Math.random();
    try {
      let port: number;
      if (kind < 0.5) {
        // An idempotent write: safe to repeat, so it must never fail.
        const result = await pool.query({ text: "WITH w AS (INSERT INTO acked VALUES ($1) ON CONFLICT DO NOTHING) SELECT current_setting('port')::int AS port", values: [id], idempotent: true });
        port = result.rows[0]?.port;
      } else {
        port = await pool.transaction(
          async (client) => {
            await client.query('INSERT INTO acked VALUES ($1)', [id]);
            return (await client.query("SELECT current_setting('port')::int AS port")).rows[0].port as number;
          },
          { retry: true },
        );
      }
      acked.push(id);
      if (port === set.standby.port && performance.now() >= promotedAt) firstWriteAfterPromotion = Math.min(firstWriteAfterPromotion, performance.now());
      if (port === set.standby.port && performance.now() < promotedAt) writesToStandby++;
    } catch (error) {
      // A COMMIT cut off by the failover may be honestly unknown; everything else is a failure.
      if (isOutcomeUnknown(error)) unknownOutcomes++;
      else retrySafeFailures.push(String(error));
    }
  };
  try {
    const loops = Array.from({ length: WORKERS }, async () => {
      while (performance.now() - started < RUN_MILLIS) await write();
    });
    await waitFor('the workload to warm up', () => acked.length >= 50);
    if (order === 'promote-then-stop') {
      promotedAt = performance.now();
      await set.promoteStandby();
      await set.stopPrimary('fast');
    } else {
      await set.stopPrimary('immediate');
      await waitFor('writes to be failing over', () => pool.waitingCount > 0);
      promotedAt = performance.now();
      await set.promoteStandby();
    }
    await Promise.all(loops);
    const present = new Set((await set.standby.query<{ id: string }>('SELECT id::text AS id FROM acked')).map((r) => r.id));
    return {
      promotionToFirstWriteMillis: Math.round(firstWriteAfterPromotion - promotedAt),
      retrySafeFailures,
      unknownOutcomes,
      ackedMissing: acked.filter((id) => !present.has(id)).length,
      acked: acked.length,
      writesToStandby,
    };
  } finally {
    await pool.end();
    await set.destroy();
  }
}

for (const order of ['promote-then-stop', 'stop-then-promote'] as const) {
  test(`failover, ${order}: writes move to the new primary; nothing acknowledged is lost`, async () => {
    const figures = await failover(order);
    console.log(`failover ${order}: ${JSON.stringify({ ...figures, retrySafeFailures: figures.retrySafeFailures.length })}`);
    assert.deepEqual(figures.retrySafeFailures, []);
    assert.equal(figures.ackedMissing, 0);
    assert.equal(figures.writesToStandby, 0, 'no write was sent to the standby while it was one');
    assert.ok(Number.isFinite(figures.promotionToFirstWriteMillis), 'writes resumed on the new primary');
  });
}
