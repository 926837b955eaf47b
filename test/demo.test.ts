/**
 * `pg-lifeline demo`, run as a user would (a child process, 25 s, one instance of each fault),
 * then its HTML report rendered in headless Chromium. Beside it, a 20 s run with --url against a
 * harness server, where the faults that need control of the server are skipped and said to be.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { PgCluster } from './harness/cluster.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const RUN_TIMEOUT_MS = 120_000;
const FAULTS = ['idle_session_timeout', 'pg_terminate_backend', 'restart', 'crash', 'blackhole', 'connection reset'];
/** The faults a --url server cannot be put through. */
const SERVER_FAULTS = ['idle_session_timeout', 'restart', 'crash'];

let dir: string;
let reportFile: string;
let jsonFile: string;
let run: { code: number | null; stdout: string; stderr: string };
let urlRun: { code: number | null; stdout: string; stderr: string };
let urlDir: string;
let cluster: PgCluster | undefined;

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
  jsonFile = path.join(dir, 'report.json');
  urlDir = path.join(dir, 'url');
  cluster = await PgCluster.start();
  // Side by side, so the file takes about as long as the full run alone.
  [run, urlRun] = await Promise.all([
    runDemo(['--seconds', '25', '--no-open', '--report', reportFile, '--json', jsonFile]),
    runDemo(['--url', cluster.connectionString(), '--seconds', '20', '--no-open', '--report', `${urlDir}.html`, '--json', `${urlDir}.json`]),
  ]);
});

after(async () => {
  await cluster?.destroy();
  await rm(dir, { recursive: true, force: true });
});

test('the demo runs both libraries through every fault and prints the table', () => {
  assert.equal(run.code, 0, `demo failed:\n${run.stdout}\n${run.stderr}`);
  for (const fault of FAULTS) {
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

test('the headline sums up both libraries, and pg-lifeline neither crashed nor hung', () => {
  const headline = run.stdout.split('\n').find((l) => l.startsWith('pg.Pool: '));
  assert.ok(headline, `no headline in:\n${run.stdout}`);
  const lib = '(no errors|\\d+ errors[^;]*), (\\d+) crashes, (\\d+) hung, LISTEN got (\\d+)/(\\d+)(?: \\(lost \\d+, told the app of (?:all|\\d+)\\))?[^;]*';
  const match = new RegExp(`^pg\\.Pool: ${lib}; pg-lifeline: ${lib}\\.$`).exec(headline);
  assert.ok(match, headline);
  const [, , , , pgHeard, sent, , lifelineCrashes, lifelineHung, lifelineHeard] = match;
  assert.deepEqual([lifelineCrashes, lifelineHung], ['0', '0'], headline);
  // The publisher sent at least one notification a second for most of the run, and pg-lifeline's listener got some.
  assert.ok(Number(sent) > 0 && Number(lifelineHeard) > 0 && Number(pgHeard) <= Number(sent), headline);
});

test('the per-fault table has a row for each fault with both libraries\' cells', () => {
  const header = run.stdout.split('\n').find((l) => l.startsWith('fault ') && l.includes('not applied'));
  assert.ok(header, `no per-fault table in:\n${run.stdout}`);
  assert.equal(header.match(/first ok/g)?.length, 2, 'one group of columns per library');
  for (const fault of FAULTS) {
    const line = run.stdout.split('\n').find((l) => new RegExp(`^\\d+\\.\\d s [^\\n]*${fault}`).test(l));
    assert.ok(line, `no per-fault row for ${fault}`);
    // Five counts and "first ok" (ms or never) for each library.
    assert.match(line, /(\s+\d+){5}\s+(\d+ ms|never)(\s+\d+){5}\s+(\d+ ms|never)\s*$/, line);
  }
});

/** The LISTEN table's rows, by fault label: sent, then delivered, lost and told for pg.Pool and for pg-lifeline. */
function listenRows(stdout: string): Map<string, number[]> {
  const lines = stdout.split('\n');
  const start = lines.indexOf('LISTEN per fault:');
  assert.ok(start >= 0, `no LISTEN table in:\n${stdout}`);
  const rows = new Map<string, number[]>();
  for (const line of lines.slice(start + 4)) {
    const match = /^(\S.*?)((?:\s+\d+){7})\s*$/.exec(line);
    if (!match) break;
    rows.set(match[1] ?? '', (match[2] ?? '').trim().split(/\s+/).map(Number));
  }
  return rows;
}

test('the LISTEN table has, per fault and library, what was delivered, lost and told', () => {
  const rows = listenRows(run.stdout);
  for (const fault of FAULTS) assert.ok([...rows.keys()].some((label) => label.includes(fault)), `no LISTEN row for ${fault}`);
  for (const [label, [sent = 0, ...cells]] of rows) {
    for (let i = 0; i < 6; i += 3) {
      const [delivered = 0, lost = 0, told = 0] = cells.slice(i, i + 3);
      assert.equal(delivered + lost, sent, `${label}: delivered and lost add up to sent`);
      assert.ok(told <= lost, `${label}: told of more than was lost`);
    }
  }
  // The note says how "told" is counted, for both libraries alike.
  assert.match(run.stdout, /A loss is told when its NOTIFY \(from its send to its acknowledgement\) overlaps a window the listener reported/);
});

test('--json holds every figure of the tables, and both configurations', async () => {
  const json = JSON.parse(await readFile(jsonFile, 'utf8')) as {
    version: number;
    headline: string;
    libraries: Array<{
      library: string;
      configuration: string;
      errors: number;
      crashes: number;
      hung: number;
      lostWrites: number;
      errorKinds: unknown[];
      listen: { sent: number; delivered: number; lost: number; told: number };
    }>;
    faults: Array<{ label: string; start: number | null; cells: Record<string, { unknown: number; notApplied: number; other: number; sent: number; heard: number; lost: number; told: number }> }>;
    skipped: string[];
  };
  assert.equal(json.version, 1);
  assert.ok(run.stdout.includes(json.headline), 'the headline is the one printed');
  assert.deepEqual(json.libraries.map((l) => l.library), ['pg.Pool', 'pg-lifeline']);
  const [pgConfig, lifelineConfig] = json.libraries.map((l) => l.configuration);
  assert.match(pgConfig ?? '', /connectionTimeoutMillis 5000/);
  assert.match(lifelineConfig ?? '', /default options.*default connectionTimeoutMillis/);
  for (const lib of json.libraries) {
    const [errors, lost, crashes, hung] = row(lib.library);
    assert.deepEqual([lib.errors, lib.lostWrites, lib.crashes, lib.hung].map(String), [errors, lost, crashes, hung], lib.library);
  }
  for (const fault of FAULTS) assert.ok(json.faults.some((f) => f.label.includes(fault)), `no JSON row for ${fault}`);
  for (const f of json.faults) assert.deepEqual(Object.keys(f.cells).sort(), ['pg', 'pg-lifeline']);
  // The LISTEN table's every number, and its totals.
  const rows = listenRows(run.stdout);
  json.libraries.forEach((lib, i) => {
    const key = i === 0 ? 'pg' : 'pg-lifeline';
    const sum = { sent: 0, delivered: 0, lost: 0, told: 0 };
    for (const f of json.faults) {
      const cell = f.cells[key];
      assert.ok(cell);
      const printed = [...rows.entries()].find(([label]) => label === (f.start === null ? f.label : `${f.start.toFixed(1)} s ${f.label}`))?.[1];
      assert.ok(printed, `no LISTEN row for ${f.label}`);
      assert.deepEqual([cell.sent, cell.heard, cell.lost, cell.told], [printed[0], ...printed.slice(1 + 3 * i, 4 + 3 * i)], `${lib.library} ${f.label}`);
      sum.sent += cell.sent;
      sum.delivered += cell.heard;
      sum.lost += cell.lost;
      sum.told += cell.told;
    }
    assert.deepEqual(lib.listen, sum, lib.library);
  });
  assert.deepEqual(json.skipped, []);
  assert.match(run.stdout, /pg-lifeline with default options/);
});

test('with --url, the faults that need control of the server are skipped, and the terminal, report and JSON say so', async () => {
  assert.equal(urlRun.code, 0, `demo --url failed:\n${urlRun.stdout}\n${urlRun.stderr}`);
  const json = JSON.parse(await readFile(`${urlDir}.json`, 'utf8')) as { server: string; skipped: string[]; windows: Array<{ label: string }> };
  assert.match(json.server, /--url/);
  const html = await readFile(`${urlDir}.html`, 'utf8');
  const notPlayed = urlRun.stdout.slice(urlRun.stdout.indexOf('Not played:'));
  for (const fault of SERVER_FAULTS) {
    const note = json.skipped.find((s) => s.startsWith(fault) || s.includes(fault));
    assert.ok(note, `${fault} is not in the skipped list: ${JSON.stringify(json.skipped)}`);
    assert.match(note, /skipped, it needs control of the server.*--url/);
    assert.ok(!json.windows.some((w) => w.label.includes(fault)), `${fault} played against a --url server`);
    assert.ok(notPlayed.includes(note), `the terminal does not list ${fault} as not played`);
    assert.ok(html.includes(`<li>${note.replace(/'/g, '&#39;')}</li>`), `the report does not list ${fault} as not played`);
  }
  assert.equal(json.skipped.length, SERVER_FAULTS.length, JSON.stringify(json.skipped));
  for (const fault of ['pg_terminate_backend', 'connection reset', 'blackhole']) assert.ok(json.windows.some((w) => w.label.includes(fault)), `${fault} did not play`);
});

test('error codes appear intact, each kind with an example message', () => {
  assert.doesNotMatch(run.stdout, /\bNPN\b|\bNPN\d/, 'digits inside codes were replaced');
  // pg_terminate_backend, the restart and the crash end sessions with these SQLSTATEs.
  assert.match(run.stdout, /\d+ x 57P0[123]\b/);
  assert.match(run.stdout, /pg-lifeline errors by code and cause/);
  const kinds = run.stdout.split('\n').filter((l) => /^\s+\d+ x /.test(l)).length;
  const examples = run.stdout.split('\n').filter((l) => /^\s+e\.g\. \S/.test(l)).length;
  assert.ok(kinds > 0 && kinds === examples, `${kinds} kinds, ${examples} examples`);
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
    assert.ok((await page.locator('svg g.fault rect').count()) >= 5, 'fault windows are not shaded');
    assert.ok((await page.locator('svg g.fault text').allTextContents()).some((t) => t.includes('blackhole')));
    // Idle gaps are shaded apart from outages, and the legend says which is which.
    assert.ok((await page.locator('svg g.idle rect.gap').count()) >= 2, 'idle gaps are not shaded');
    assert.match(await page.locator('.legend').last().innerText(), /idle gap/);
    assert.match(await page.locator('#headline').innerText(), /^pg\.Pool: .*; pg-lifeline: .*, 0 crashes, 0 hung, LISTEN got \d+\/\d+/);
    const faultRows = await page.locator('#faults tr[data-fault]').allTextContents();
    for (const fault of FAULTS) assert.ok(faultRows.some((r) => r.includes(fault)), `no per-fault row for ${fault} in the report`);
    // The LISTEN table: a row per fault, with delivered, lost and told for each library, and the note on "told".
    assert.match(await page.locator('#listen tr').nth(1).innerText(), /fault\s+sent(\s+delivered\s+lost\s+told){2}/);
    const listenRows = await page.locator('#listen tr[data-fault]').allInnerTexts();
    for (const fault of FAULTS) {
      const found = listenRows.find((r) => r.includes(fault));
      assert.ok(found, `no LISTEN row for ${fault} in the report`);
      assert.match(found, /(\s\d+){7}\s*$/, found);
    }
    assert.ok(await page.locator('#listen').isVisible());
    assert.match(await page.locator('#listen + p.note').innerText(), /A loss is told when/);
    assert.match(await page.locator('#configurations').innerText(), /pg-lifeline with default options/);
    assert.match(await page.locator('body').innerText(), /scram-sha-256 password over TLS/);
    assert.equal(await page.locator('table.errors').count() + (await page.getByText('No errors.').count()), 2);
    assert.ok((await page.locator('table.errors code.code').allTextContents()).every((c) => !/NPN/.test(c)));
    const shot = path.join(profile, 'report.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await stat(shot)).size > 0);
  } finally {
    await browser.close();
    await rm(profile, { recursive: true, force: true });
  }
});
