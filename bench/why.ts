import type { ProfileSummary } from './cpuprofile.js';
import { pairedRatio, type Results } from './scenarios/interleave.js';
import { TX_VARIANTS } from './scenarios/transaction.js';

const pct = (x: number): string => `${(x * 100).toFixed(0)} %`;

/** Reading of the profiles, appended to BENCHMARKS.md. */
export function why(profiles: Array<{ title: string; p: ProfileSummary }>, tx: Results): string {
  const out = ['### Why', ''];
  for (const { title, p } of profiles) {
    const writes = p.top.filter((t) => t.fn === 'writeBuffer' || t.fn === 'writev').reduce((a, t) => a + t.share, 0);
    const own = p.byArea.find((a) => a.area === 'pg-lifeline src/')?.share ?? 0;
    const idle = p.byArea.find((a) => a.area === '(idle)')?.share ?? 0;
    const bench = p.byArea.find((a) => a.area === 'bench loop')?.share ?? 0;
    const facts = [
      writes > 0.01 ? `socket writes (\`writeBuffer\`/\`writev\`, one system call per message batch) take ${pct(writes)} of the samples` : '',
      idle > 0.01 ? `the event loop waits ${pct(idle)}` : '',
      bench > 0.01 ? `the benchmark loop itself (its \`performance.now()\` timing included) ${pct(bench)}` : '',
      `pg-lifeline's own code (src/) ${pct(own)}`,
    ].filter(Boolean).join(', ');
    if (title.startsWith('transaction')) {
      const row = tx.get('tx c8');
      const untracked = pairedRatio(row?.get(TX_VARIANTS[1]), row?.get(TX_VARIANTS[3]));
      out.push(
        `- **${title.split(':')[0]}**: ${facts}. The gap is a round trip, not CPU: the default \`pool.transaction\` asks for the transaction id before COMMIT (\`resolveCommitOutcome\`), so it makes 4 round trips (BEGIN, INSERT, the id query, COMMIT) where \`sql.begin\` makes 3. With \`resolveCommitOutcome: false\` it runs at ${untracked.toFixed(2)}× postgres.js in this run.`,
      );
    } else if (title.startsWith('checkout')) {
      out.push(`- **${title.split(':')[0]}**: ${facts}. No I/O happens in a checkout, so the difference is bookkeeping per checkout: an async \`#lease\` (a promise per call, even when a connection is idle) and a new \`Lease\` handle each time, the price of detecting use after release. postgres.js hands out a reserved connection with less of both; at c16 (more callers than the 10 connections) every lifeline checkout past the tenth also goes through the waiter queue.`);
    } else {
      out.push(
        `- **${title.split(':')[0]}**: ${facts}. System calls are a large share of the cost here, and postgres.js pipelines: past its 10 connections it writes several queries on one connection without waiting, so it pays fewer writes and wake-ups per query. A pool that runs one query per connection at a time (pg.Pool, pg-lifeline) cannot do that; pg 8.23's pipeline mode only helps a single shared Client (see "pg pipeline" above).`,
      );
    }
  }
  out.push('', 'Module-loading entries (tsx compiling TypeScript at startup) are part of every profile; they are not per-query cost.', '');
  return out.join('\n');
}
