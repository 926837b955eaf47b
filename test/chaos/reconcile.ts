import type { PgCluster } from '../harness/cluster.js';
import { median, type LibResult, type WorkerReport } from './report.js';
import type { WorkerExit } from './spawn.js';

export const ACCOUNTS = 100;
export const BALANCE = 1000;
export const EXPECTED_SUM = ACCOUNTS * BALANCE;

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS accounts(id int PRIMARY KEY, balance bigint NOT NULL);
  CREATE TABLE IF NOT EXISTS kv(k int PRIMARY KEY, v text);
  CREATE TABLE IF NOT EXISTS ledger(id uuid PRIMARY KEY, amount int);
  CREATE TABLE IF NOT EXISTS transfer_log(transfer_id uuid, at timestamptz DEFAULT now());
`;

/** Creates the tables if needed, empties them and reseeds the accounts. */
export async function resetSchema(cluster: PgCluster): Promise<void> {
  await cluster.query(SCHEMA);
  await cluster.query(
    `TRUNCATE accounts, kv, ledger, transfer_log;
     INSERT INTO accounts SELECT g, ${BALANCE} FROM generate_series(1, ${ACCOUNTS}) AS g;`,
  );
}

export async function balanceSum(cluster: PgCluster): Promise<number> {
  const rows = await cluster.query<{ sum: string }>('SELECT sum(balance)::text AS sum FROM accounts');
  return Number(rows[0]?.sum);
}

/**
 * Compares one worker's claims with what the database holds, for the rows of its id prefix:
 * acked but missing, reported as a definite failure but present, and transfers applied twice.
 */
export async function reconcile(cluster: PgCluster, idPrefix: string, exit: WorkerExit): Promise<LibResult> {
  const r: WorkerReport = exit.report;
  const like = `${idPrefix}%`;
  const ledger = new Set(
    (await cluster.query<{ id: string }>('SELECT id::text AS id FROM ledger WHERE id::text LIKE $1', [like])).map((row) => row.id),
  );
  const transfers = new Map(
    (
      await cluster.query<{ id: string; n: number }>(
        'SELECT transfer_id::text AS id, count(*)::int AS n FROM transfer_log WHERE transfer_id::text LIKE $1 GROUP BY 1',
        [like],
      )
    ).map((row) => [row.id, row.n]),
  );
  const ackedMissing = [
    ...r.acked.filter((id) => !ledger.has(id)).map((id) => `ledger ${id}`),
    ...r.transfersAcked.filter((id) => !transfers.has(id)).map((id) => `transfer ${id}`),
  ];
  const presentButFailed = [
    ...r.definiteFailed.filter((id) => ledger.has(id)).map((id) => `ledger ${id}`),
    ...r.transfersDefiniteFailed.filter((id) => transfers.has(id)).map((id) => `transfer ${id}`),
  ];
  const appliedTwice = [...transfers].filter(([, n]) => n > 1).map(([id, n]) => `transfer ${id} x${n}`);
  const unknownLanded = r.unknown.filter((id) => ledger.has(id)).length + r.transfersUnknown.filter((id) => transfers.has(id)).length;
  const crashed = exit.code !== 0 || exit.signal !== null;
  const exitText = (exit.reported ? '' : 'NO REPORT, ') + (exit.killedByUs ? 'killed (overran)' : exit.signal !== null ? `signal ${exit.signal}` : `exit ${exit.code}`);
  return {
    report: r,
    reported: exit.reported,
    crashed,
    exit: exitText,
    stderrSummary: exit.stderrSummary,
    ackedMissing,
    presentButFailed,
    appliedTwice,
    unknownLanded,
    recoveryMs: median(r.firstOkAfter),
  };
}
