// What fresh-app.test.ts asserts on each library's app, the same for every library, so that adding
// one needs no code here. The fixtures' side of the contract is in fixtures/fresh-app/app-kit.cjs.
import assert from 'node:assert/strict';
import path from 'node:path';
import type { TestContext } from 'node:test';

/** One library in the fresh app. */
export interface Library {
  /** Names its database and application_name. */
  readonly key: string;
  readonly name: string;
  /** In fixtures/fresh-app/: `.cjs` to load pg-lifeline through `require`, `.mjs` through `import`. */
  readonly fixture: string;
  /** npm packages the app installs for it, at the versions in the repository's node_modules. */
  readonly packages: readonly string[];
  /** The Node.js major line its app needs (20: the one running the tests; 22: scripts/node-versions.ts's 22 when that is older). */
  readonly node: 20 | 22;
  /** A job queue: its fault cases must also show each job processed exactly once. */
  readonly queue: boolean;
}

/** One case as an app reports it. */
export interface CaseReport {
  readonly name: string;
  /** Rejections of retry-safe work: must be none. */
  readonly errors: readonly string[];
  /** Set when the case itself threw. */
  readonly failed?: string;
  readonly stack?: string;
  /** What the app got from the library, and what it should have got. */
  readonly expect?: Readonly<Record<string, readonly [unknown, unknown]>>;
  /** Job queues: the ids of the jobs the case enqueued, each recorded in `runs` once per run. */
  readonly jobs?: readonly string[];
  readonly [other: string]: unknown;
}

/** What an app sends back at the end. */
export interface AppReport {
  readonly node: string;
  readonly cases: readonly CaseReport[];
  /** Unhandled rejections and uncaught exceptions the app's process saw. */
  readonly escaped: readonly string[];
  /** The instanceof and identity checks the library depends on: each must be true. */
  readonly checks?: Readonly<Record<string, boolean>>;
  /** Where the app (and the library) resolved its packages. */
  readonly resolved?: Readonly<Record<string, string>>;
  /** The pool's 'error' events (idle connections that died), for the log. */
  readonly poolErrors?: readonly string[];
  /** What the library logged at error level, for the log. */
  readonly logged?: readonly string[];
  /** Statements of the library's own that a kill caught while they ran (outcome unknown, so not retry-safe): for the log. */
  readonly inFlight?: readonly string[];
  readonly fatal?: string;
  readonly exitCode?: number | null;
  readonly output?: string;
}

/** The cases every app runs. */
export const REQUIRED_CASES = ['ordinary use', 'every idle backend killed', 'fast restart', "kill inside the library's transaction"];

interface CheckContext {
  readonly library: Library;
  readonly report: AppReport;
  /** The app's directory. */
  readonly app: string;
  /** Runs a statement in the library's database from the test's own connection. */
  readonly count: <R>(sql: string, values?: unknown[]) => Promise<R[]>;
}

/** Asserts the report and, from the test's own connection, what was saved. */
export async function checkLibrary(t: TestContext, { library, report, app, count }: CheckContext): Promise<void> {
  const context = `${library.name} app output:\n${report.output ?? ''}`;
  assert.equal(report.fatal, undefined, context);
  assert.equal(report.exitCode, 0, context);
  assert.ok(Number(report.node.split('.')[0]) >= library.node, `the app ran on Node.js ${report.node}; ${library.name} needs ${library.node}`);
  assert.deepEqual(report.escaped, [], 'nothing reached the process as uncaught');
  for (const key of ['poolErrors', 'logged', 'inFlight'] as const) if (report[key] !== undefined) t.diagnostic(`${library.name} ${key}: ${JSON.stringify(report[key])}`);

  // Resolved from the app's own node_modules, never from the repository's.
  const modules = path.join(app, 'node_modules') + path.sep;
  const resolved = Object.entries(report.resolved ?? {});
  assert.ok(resolved.some(([name]) => name === 'pg'), 'the app reports where it resolved pg');
  for (const [name, file] of resolved) assert.ok(file.startsWith(modules), `${name} resolved to ${file}, outside ${modules}`);
  assert.equal(report.resolved?.['pg'], path.join(modules, 'pg', 'lib', 'index.js'));

  const checks = Object.entries(report.checks ?? {});
  assert.ok(checks.length > 0, 'the app reports the instanceof checks');
  assert.deepEqual(checks.filter(([, ok]) => !ok), [], 'instanceof and identity checks that failed');

  assert.deepEqual(report.cases.map((c) => c.name).filter((name) => REQUIRED_CASES.includes(name)), REQUIRED_CASES);
  for (const c of report.cases) {
    t.diagnostic(`figure: fresh-app | ${library.name} | ${c.name} | errors ${c.errors.length}${c.errors.length ? ` ${JSON.stringify(c.errors)}` : ''}`);
    for (const key of ['firstTry', 'logged'] as const) if (c[key] !== undefined) t.diagnostic(`  ${key}: ${JSON.stringify(c[key])}`);
    assert.equal(c.failed, undefined, `${c.name}: ${c.stack ?? ''}`);
    assert.deepEqual(c.errors, [], `${c.name}: retry-safe work failed`);
    for (const [what, [actual, expected]] of Object.entries(c.expect ?? {})) assert.deepEqual(actual, expected, `${c.name}: ${what}`);
    if (c.jobs) {
      const rows = await count<{ job: string; n: number }>('SELECT job, count(*)::int AS n FROM runs WHERE job = ANY($1) GROUP BY job', [c.jobs]);
      const wrong = c.jobs.map((job) => [job, rows.find((r) => r.job === job)?.n ?? 0] as const).filter(([, n]) => n !== 1);
      assert.deepEqual(wrong, [], `${c.name}: jobs not processed exactly once (job, runs)`);
    }
  }
  if (library.queue) {
    for (const name of ['every idle backend killed', 'fast restart']) {
      assert.ok((report.cases.find((c) => c.name === name)?.jobs?.length ?? 0) > 0, `${name}: jobs enqueued across the fault`);
    }
  }
  // The killed transaction saved nothing, and the retry saved its rows once.
  assert.deepEqual(await count(`SELECT count(*)::int AS n FROM payments WHERE ref = 'killed'`), [{ n: 1 }], 'one payment from the killed transaction and its retry');
  assert.deepEqual(await count(`SELECT count(*)::int AS n FROM items WHERE label = 'killed'`), [{ n: 1 }], 'one item from the killed transaction and its retry');
}
