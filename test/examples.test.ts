/**
 * The examples in examples/, run as a user runs them, in self-check mode (`--once`): each starts
 * its own throwaway server, injects real faults (terminated sessions, idle_session_timeout) and
 * must exit 0 with every step passed. They import 'pg-lifeline' itself, which resolves to dist/:
 * `npm test` builds it first; run `npm run build` before running this file on its own.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
// Each example's own watchdog fails it at 45 s; this only catches one that ignores it.
const RUN_TIMEOUT_MS = 50_000;
const KILL_GRACE_MS = 5_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Starts `examples/<name>.ts` with `args`; `onOutput` sees stdout as it grows. Past the timeout
 * the child gets SIGTERM by pid (its exit hooks then stop its server), and SIGKILL if that fails.
 */
function runExample(name: string, args: string[], extraEnv: Record<string, string> = {}, onOutput?: (stdout: string, pid: number) => void): Promise<Run> {
  assert.ok(existsSync(new URL('../dist/index.js', import.meta.url)), 'dist/index.js is missing: run `npm run build` before this test');
  const env: NodeJS.ProcessEnv = { ...process.env, ...extraEnv };
  delete env['DATABASE_URL']; // always a throwaway server, never the developer's database
  delete env['NODE_TEST_CONTEXT']; // the example is not a test file
  const child = spawn(process.execPath, ['--import', 'tsx', `examples/${name}.ts`, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const pid = child.pid;
  assert.ok(pid !== undefined, `could not start examples/${name}.ts`);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    onOutput?.(stdout, pid);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const kill = (signal: NodeJS.Signals): void => {
    if (child.exitCode === null && child.signalCode === null) process.kill(pid, signal);
  };
  const term = setTimeout(() => kill('SIGTERM'), RUN_TIMEOUT_MS);
  const hard = setTimeout(() => kill('SIGKILL'), RUN_TIMEOUT_MS + KILL_GRACE_MS);
  return new Promise((resolve) =>
    child.once('close', (code, signal) => {
      clearTimeout(term);
      clearTimeout(hard);
      resolve({ code, signal, stdout, stderr });
    }),
  );
}

function assertPassed(name: string, run: Run, expected: RegExp[]): void {
  const output = `--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`;
  assert.equal(run.code, 0, `${name} exited with ${run.code ?? run.signal}\n${output}`);
  assert.match(run.stdout, /^self-check passed$/m, output);
  assert.doesNotMatch(run.stdout, /^FAIL/m, output);
  for (const pattern of expected) assert.match(run.stdout, pattern, output);
}

describe('examples', { concurrency: true }, () => {
  test('http-service: requests through terminated sessions all succeed', async () => {
    const run = await runExample('http-service', ['--once']);
    assertPassed('http-service', run, [
      /^ok +errors map to 409, 400 and 404$/m,
      /^ok +\d+ idle session\(s\) terminated, then 20 requests/m,
      /^ok +\d+ busy session\(s\) terminated under \d+ requests \(0 failed\)$/m,
      /^ok +every acknowledged item saved once, with its event/m,
      /^shut down: server closed, pool ended$/m,
    ]);
  });

  test('http-service: SIGTERM closes the server and ends the pool', async () => {
    let signalled = false;
    const run = await runExample('http-service', [], { PORT: '0' }, (stdout, pid) => {
      if (signalled || !/^listening on /m.test(stdout)) return;
      signalled = true;
      process.kill(pid, 'SIGTERM');
    });
    const output = `--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}`;
    assert.equal(run.code, 0, output);
    assert.match(run.stdout, /^SIGTERM: shutting down$/m, output);
    assert.match(run.stdout, /^shut down: server closed, pool ended$/m, output);
  });

  for (const name of ['drizzle-app', 'kysely-app']) {
    test(`${name}: a transaction cut mid-way is retried by the app, once`, async () => {
      const run = await runExample(name, ['--once']);
      assertPassed(name, run, [
        /^order \w+-2: try 1 failed \(connection-lost\), trying again/m,
        /^ok +session terminated mid-transaction, the retry placed the order once$/m,
        /^ok +a repeated request returns its order and takes no more stock$/m,
        /^ok +an order beyond the stock is refused, not retried$/m,
      ]);
      assert.doesNotMatch(run.stdout, /try 2 failed/, 'more than one retry was needed');
    });
  }

  test('long-idle-worker: jobs after sleeps past idle_session_timeout all run', async () => {
    const run = await runExample('long-idle-worker', ['--once']);
    assertPassed('long-idle-worker', run, [/^ok +4 jobs done across 3 sleeps past idle_session_timeout \(0 failed\)$/m, /^ok +the server ended idle sessions while the worker slept/m]);
    assert.equal(run.stdout.match(/^job \d+: done$/gm)?.length, 4, run.stdout);
  });
});
