// For the TypeORM and Knex suites, which run each fault against pg-lifeline and against the
// library's own pool: what the app saw, so the two can be compared (and quoted in
// docs/integrations.md), while only pg-lifeline's outcome is asserted.
import type { TestContext } from 'node:test';

/** Errors the app's calls rejected with, pool 'error' events, and errors that reached the process. */
export interface Tally {
  readonly app: unknown[];
  readonly pool: unknown[];
  readonly escaped: unknown[];
}

/** An empty tally, one per case and pool. */
export function newTally(): Tally {
  return { app: [], pool: [], escaped: [] };
}

/** Settles every call, records each rejection in the tally, and gives back the values (undefined where it failed). */
export async function settle<T extends readonly unknown[]>(tally: Tally, calls: { [K in keyof T]: Promise<T[K]> }): Promise<{ [K in keyof T]: T[K] | undefined }> {
  const results = await Promise.allSettled(calls);
  return results.map((result) => {
    if (result.status === 'fulfilled') return result.value;
    tally.app.push(result.reason);
    return undefined;
  }) as { [K in keyof T]: T[K] | undefined };
}

/** Watches the process for unhandled rejections and uncaught exceptions until the returned function is called. */
export function watchProcess(tally: Tally): () => void {
  const record = (error: unknown): void => void tally.escaped.push(error);
  // The monitor variant observes an uncaught exception without stopping the crash it causes.
  process.on('unhandledRejection', record).on('uncaughtExceptionMonitor', record);
  return () => void process.off('unhandledRejection', record).off('uncaughtExceptionMonitor', record);
}

/** One line per case and pool, greppable as `figure:` in the test output. */
export function report(t: TestContext, library: string, pool: string, tally: Tally): void {
  t.diagnostic(`figure: ${library} | ${t.name} | ${pool} | app errors ${tally.app.length} | pool 'error' events ${tally.pool.length} | unhandled ${tally.escaped.length}`);
  for (const [kind, errors] of [['app', tally.app], ['unhandled', tally.escaped]] as const) {
    const counts = new Map<string, number>();
    for (const error of errors) {
      const text = describe(error);
      counts.set(text, (counts.get(text) ?? 0) + 1);
    }
    for (const [text, n] of counts) t.diagnostic(`  ${kind} ${n}x ${text}`);
  }
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  return `${error.name}${typeof code === 'string' ? ` ${code}` : ''}: ${error.message.split('\n')[0]?.slice(0, 160)}`;
}
