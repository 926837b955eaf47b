import type { PgCluster } from '../../test/harness/cluster.js';
import { FaultProxy } from '../../test/harness/proxy.js';
import { median, now, shortError, within } from '../lib.js';
import { lifeline, pgPool, postgresJs, type Lib } from '../targets.js';

const CAP = 5_000;
const LATER_CAP = 10_000;

export interface BlackholeSummary {
  byLib: Map<string, { settleMs: number; settledRounds: number; outcome: string; laterOk: number; laterMs: number }>;
  rounds: number;
}

async function round(cluster: PgCluster): Promise<Map<string, { settleMs: number; outcome: string; laterOk: boolean; laterMs: number }>> {
  const proxy = await FaultProxy.start({ host: cluster.host, port: cluster.port });
  const url = `postgres://${cluster.user}:${encodeURIComponent(cluster.password)}@${proxy.host}:${proxy.port}/${cluster.database}`;
  const libs: Lib[] = [lifeline(url, { query_timeout: 1000 }), pgPool(url, { query_timeout: 1000 }), postgresJs(url)];
  const out = new Map<string, { settleMs: number; outcome: string; laterOk: boolean; laterMs: number }>();
  try {
    // Warm: a few connections per library.
    await Promise.all(libs.flatMap((lib) => Array.from({ length: 4 }, () => lib.select1())));
    proxy.blackhole();
    await Promise.all(
      libs.map(async (lib) => {
        const t = now();
        const r = await within(lib.select1(), CAP);
        const settleMs = r.ok || r.timedOut ? NaN : now() - t;
        const outcome = r.ok ? 'succeeded (?)' : r.timedOut ? `still pending at ${CAP / 1000} s` : shortError(r.error);
        out.set(lib.name, { settleMs, outcome, laterOk: false, laterMs: NaN });
      }),
    );
    proxy.passThrough();
    await Promise.all(
      libs.map(async (lib) => {
        const t = now();
        const r = await within(lib.select1(), LATER_CAP);
        Object.assign(out.get(lib.name)!, { laterOk: r.ok, laterMs: now() - t });
      }),
    );
  } finally {
    await Promise.all(libs.map((l) => within(l.end(), 2_000)));
    await proxy.close();
  }
  return out;
}

/** Scenario 5: a warm pool behind a proxy that starts dropping every packet. */
export async function blackhole(cluster: PgCluster, rounds: number): Promise<BlackholeSummary> {
  const all = [];
  for (let i = 0; i < rounds; i++) all.push(await round(cluster));
  const byLib: BlackholeSummary['byLib'] = new Map();
  for (const name of all[0]!.keys()) {
    const rs = all.map((r) => r.get(name)!);
    byLib.set(name, {
      settleMs: median(rs.map((r) => r.settleMs)),
      settledRounds: rs.filter((r) => !Number.isNaN(r.settleMs)).length,
      outcome: [...new Set(rs.map((r) => r.outcome))].join('; '),
      laterOk: rs.filter((r) => r.laterOk).length,
      laterMs: median(rs.map((r) => r.laterMs)),
    });
  }
  return { byLib, rounds };
}
