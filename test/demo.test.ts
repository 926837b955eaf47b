/**
 * `pg-lifeline demo`, run as a user would (a child process, 25 s, one instance of each fault),
 * then its HTML report rendered in headless Chromium.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const RUN_TIMEOUT_MS = 90_000;

let dir: string;
let reportFile: string;
let run: { code: number | null; stdout: string; stderr: string };

function runDemo(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = { ...process.env };
  delete env['NODE_TEST_CONTEXT']; // the CLI is not a test file
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'demo', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  // By pid, so a hung demo cannot outlive the test (its own exit hooks then stop its server).
  const timer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, 'SIGTERM'), RUN_TIMEOUT_MS);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  );
}

/** The row of the final table for one library, as its cells. */
function row(label: string): string[] {
  const line = run.stdout.split('\n').find((l) => l.startsWith(`${label} `) && /\d\s*$/.test(l));
  assert.ok(line, `no table row for ${label} in:\n${run.stdout}`);
  return line.slice(label.length).trim().split(/\s+/);
}

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-demo-test-'));
  reportFile = path.join(dir, 'report.html');
  run = await runDemo(['--seconds', '25', '--no-open', '--report', reportFile]);
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('the demo runs both libraries through every fault and prints the table', () => {
  assert.equal(run.code, 0, `demo failed:\n${run.stdout}\n${run.stderr}`);
  for (const fault of ['idle_session_timeout', 'pg_terminate_backend', 'restart', 'crash', 'blackhole', 'connection reset']) {
    assert.match(run.stdout, new RegExp(`fault start [^\\n]*${fault}`), `fault ${fault} did not play`);
  }
  assert.match(run.stdout, /errors seen\s+lost writes\s+crashes\s+hung ops\s+recovery ms\s+ops\/s/);
  row('pg.Pool');
  const [errors, lost, crashes, hung, , opsPerSecond] = row('pg-lifeline');
  assert.equal(lost, '0', 'pg-lifeline lost acknowledged writes');
  assert.equal(crashes, '0', 'pg-lifeline crashed');
  assert.equal(hung, '0', 'pg-lifeline left ops hanging');
  assert.ok(Number(opsPerSecond) > 0 && Number(errors) >= 0);
  assert.ok(run.stdout.includes(`report: ${reportFile}`));
  assert.ok(existsSync(reportFile));
});

test('the report renders in headless Chromium', { skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing. Fix: apt-get install chromium (or run .ci/run)` }, async () => {
  const { chromium } = await import('playwright-core');
  const profile = await mkdtemp(path.join(os.tmpdir(), 'pg-lifeline-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  try {
    const page = await browser.newPage();
    await page.goto(pathToFileURL(reportFile).href);
    assert.match(await page.title(), /pg\.Pool vs pg-lifeline/);
    const header = await page.locator('#summary tr').first().innerText();
    assert.match(header, /lost writes/);
    assert.equal(await page.locator('#summary tr[data-library]').count(), 2);
    for (const lib of ['pg', 'pg-lifeline']) {
      assert.equal(await page.locator(`svg polyline[data-library="${lib}"]`).count(), 2, `${lib} series missing`);
    }
    assert.ok((await page.locator('svg g.fault rect').count()) >= 6, 'fault windows are not shaded');
    assert.ok((await page.locator('svg g.fault text').allTextContents()).some((t) => t.includes('blackhole')));
    const shot = path.join(profile, 'report.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await stat(shot)).size > 0);
  } finally {
    await browser.close();
    await rm(profile, { recursive: true, force: true });
  }
});
