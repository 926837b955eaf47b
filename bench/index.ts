// npm run bench: pg-lifeline vs pg.Pool vs postgres.js on one throwaway PostgreSQL; writes BENCHMARKS.md.
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { PgCluster } from '../test/harness/cluster.js';
import { profileScenario, type ProfileSummary } from './cpuprofile.js';
import { fmt, ratio } from './lib.js';
import { blackholeTable, machine, overallCheck, profileSection, recoveryTable, throughputTable, variantsTable, type Check } from './report.js';
import { blackhole } from './scenarios/blackhole.js';
import { checkout } from './scenarios/checkout.js';
import { pairedRatio, type Results } from './scenarios/interleave.js';
import { recovery } from './scenarios/recovery.js';
import { steady } from './scenarios/steady.js';
import { TX_VARIANTS, transaction } from './scenarios/transaction.js';
import { validation } from './scenarios/validation.js';
import { why } from './why.js';
import { PK_ROWS, pgPipeline, standardLibs } from './targets.js';

// Many short rounds rather than a few long ones: each round pairs the libraries close in time, so
// the median of paired ratios shrugs off the machine's drift (smaller values only for trying it out).
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const FAULT_ROUNDS = 3; // faults cost seconds each
const CELL_MS = Number(process.env.BENCH_CELL_MS ?? 300);
const WARM_MS = 100;
const started = Date.now();
const loadBefore = os.loadavg();
const log = (msg: string): void => console.log(`[${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s] ${msg}`);

// No TLS: it would add the same OpenSSL cost to every library and hide the pools' own. A password still.
const cluster = await PgCluster.start({ tls: false, settings: { shared_buffers: '128MB', max_connections: 200 } });
try {
  const url = cluster.connectionString();
  await cluster.query(`CREATE TABLE bench_kv (id int PRIMARY KEY, v int NOT NULL);
    INSERT INTO bench_kv SELECT g, g FROM generate_series(1, ${PK_ROWS}) g;
    CREATE TABLE bench_ins (id bigserial PRIMARY KEY, v int NOT NULL);`);
  await cluster.query('VACUUM ANALYZE bench_kv');
  const [{ server_version: serverVersion } = { server_version: '?' }] = await cluster.query<{ server_version: string }>('SHOW server_version');
  log(`PostgreSQL ${serverVersion} on port ${cluster.port}, ${PK_ROWS} rows`);

  const libs = standardLibs(url);
  const pipe = await pgPipeline(url);
  log('1. steady throughput');
  const s1 = await steady([...libs, pipe], ROUNDS, CELL_MS, WARM_MS);
  log('2. checkout/release');
  const s2 = await checkout(libs, ROUNDS, 300, WARM_MS);
  await Promise.all([...libs, pipe].map((l) => l.end()));
  log('3. validation and keepalive');
  const s3 = await validation(url, ROUNDS, CELL_MS, WARM_MS);
  log('6. transactions');
  const s6 = await transaction(url, ROUNDS, CELL_MS, WARM_MS);

  // Profile pg-lifeline where postgres.js is faster: the worst concurrency per query kind, at most 5.
  const slower: Array<{ title: string; args: string[]; r: number }> = [];
  const worse = (res: Results, key: string, l: string, j: string): number => pairedRatio(res.get(key)?.get(l), res.get(key)?.get(j));
  for (const key of s1.keys()) {
    const r = worse(s1, key, 'pg-lifeline', 'postgres.js');
    const [query, c] = [key.slice(0, key.lastIndexOf(' ')), key.slice(key.lastIndexOf(' ') + 2)];
    if (r < 1) slower.push({ title: key, args: ['steady', query, c], r });
  }
  for (const key of s2.keys()) {
    const r = worse(s2, key, 'pg-lifeline', 'postgres.js');
    if (r < 1) slower.push({ title: key, args: ['checkout', '-', key.split(' c')[1]!], r });
  }
  const txr = worse(s6, 'tx c8', TX_VARIANTS[0], TX_VARIANTS[3]);
  if (txr < 1) slower.push({ title: 'transaction c8', args: ['tx', '-', '8'], r: txr });
  const slowerLines = slower.map((s) => `${s.title} (${s.r.toFixed(2)}×)`);
  const worstPerKind = new Map<string, (typeof slower)[number]>();
  for (const s of slower) {
    const kind = `${s.args[0]} ${s.args[1]}`;
    if ((worstPerKind.get(kind)?.r ?? Infinity) > s.r) worstPerKind.set(kind, s);
  }
  const profiles: Array<{ title: string; p: ProfileSummary }> = [];
  for (const s of [...worstPerKind.values()].sort((a, b) => a.r - b.r).slice(0, 5)) {
    log(`profiling ${s.title}`);
    try {
      profiles.push({ title: `${s.title}: pg-lifeline at ${s.r.toFixed(2)}× postgres.js`, p: await profileScenario(url, s.args, 2500) });
    } catch (error) {
      log(`profile failed: ${(error as Error).message}`);
    }
  }

  log('4. recovery after fast restart / crash');
  const fast = await recovery(cluster, url, 'fast restart', FAULT_ROUNDS);
  const crash = await recovery(cluster, url, 'crash', FAULT_ROUNDS);
  log('5. blackhole');
  const hole = await blackhole(cluster, FAULT_ROUNDS);

  const checks: Check[] = [];
  const names = ['pg-lifeline', 'pg.Pool', 'postgres.js', 'pg pipeline'];
  const s2lines = throughputTable(s2, names, undefined);
  for (const [key, byLib] of s2) {
    const r = pairedRatio(byLib.get('pg-lifeline'), byLib.get('pg.Pool'));
    checks.push({ target: `${key}: pg-lifeline ≥ 2× pg.Pool`, met: r >= 2, detail: ratio(r, 1) });
  }
  const s1lines = throughputTable(s1, names, checks);
  checks.push(overallCheck(s1));
  const totalS = ((Date.now() - started) / 1000).toFixed(0);
  const md = [
    '# Benchmarks',
    '',
    `Generated by \`npm run bench\` (bench/index.ts) in ${totalS} s. pg-lifeline, pg.Pool and postgres.js ran in the same process against the same throwaway server; each cell is the median of ${ROUNDS} interleaved rounds (library order rotated per round, ${CELL_MS} ms measured after ${WARM_MS} ms warm-up, pool max 10 everywhere). Ratios are paired: the median over rounds of the two libraries' ratio within the same round. "Round spread" is (max − min) / median of the rounds' ops/s. Client and server share 2 cores, so absolute numbers are CPU-bound; read the ratios, and treat differences smaller than the spread as noise.`,
    '',
    '## Machine',
    '',
    ...machine(serverVersion, loadBefore),
    '',
    '## Targets',
    '',
    '| target | met | measured |',
    '|---|---|---|',
    ...checks.map((c) => `| ${c.target} | ${c.met ? 'yes' : '**no**'} | ${c.detail} |`),
    '',
    '## 1. Steady throughput and latency',
    '',
    '`SELECT 1`; a primary-key read on a 100k-row table; a one-row INSERT. cN = N concurrent loops. pg and pg-lifeline send parameterized statements unnamed (parse every time); postgres.js prepares them (its default).',
    '',
    ...s1lines,
    '',
    '"pg pipeline" is informative only, not a pool: pg 8.23\'s `pipeline: true` Client writes queued queries without waiting for the previous reply. pg.Pool (and pg-lifeline) check out a client per `pool.query`, so independent `pool.query` calls never share a connection and the option cannot pipeline them; here 10 pipelined `pg.Client`s are used directly, round-robin.',
    '',
    '## 2. Checkout/release with no query',
    '',
    '`connect()` + `release()` (postgres.js: `sql.reserve()` + `release()`).',
    '',
    ...s2lines,
    '',
    '## 3. Cost of validation, keepalive and the in-flight monitor (SELECT 1, c16)',
    '',
    '"validation + keepalive off" = `validationWindowMillis: 2147483647, keepaliveIntervalMillis: 0`. The monitor adds no timer or round trip per statement: the maintenance loop reads each socket\'s byte counter once a second, so "monitor off" should match the defaults.',
    '',
    ...variantsTable(s3, 'pg-lifeline defaults', 'pg.Pool'),
    '',
    '## 4. Recovery after a fast restart and after a crash',
    '',
    `Each library runs 4 loops of \`SELECT 1\` with a 1 ms sleep after each call; all three run at once through the same fault, ${FAULT_ROUNDS} times per fault. "Full throughput" = start of the first 500 ms window (stepped by 25 ms from the moment the server is back) with ≥ 90 % of the library's own pre-fault rate. pg.Pool has an \`error\` listener.`,
    '',
    ...recoveryTable('Fast restart (`cluster.restart(\'fast\')`)', fast, checks),
    '',
    ...recoveryTable('Crash (`cluster.crash()` then `cluster.startAgain()`)', crash, checks),
    '',
    '## 5. Blackhole detection',
    '',
    `A warm pool behind a FaultProxy, then \`proxy.blackhole()\` and one \`SELECT 1\` per library (capped at 5 s); then \`proxy.passThrough()\` and one more query (capped at 10 s). pg-lifeline and pg.Pool use \`query_timeout: 1000\`; postgres.js has no per-query timeout. ${hole.rounds} rounds, fresh pools each.`,
    '',
    ...blackholeTable(hole),
    '',
    '## 6. Transactions (one-row INSERT, c8)',
    '',
    ...variantsTable(s6, TX_VARIANTS[2], TX_VARIANTS[3]),
    '',
    '## Where postgres.js is faster',
    '',
    slowerLines.length ? `pg-lifeline is below postgres.js on: ${slowerLines.join(', ')}.` : 'pg-lifeline is at or above postgres.js on every line.',
    '',
    ...profiles.flatMap(({ title, p }) => profileSection(title, p)),
    '<!-- WHY -->',
  ];
  await writeFile(new URL('../BENCHMARKS.md', import.meta.url), md.join('\n').replace('<!-- WHY -->', profiles.length ? why(profiles, s6) : ''));

  console.log(`\nSummary (${totalS} s; details in BENCHMARKS.md)`);
  for (const [key, byLib] of s1) {
    const l = byLib.get('pg-lifeline');
    console.log(`  ${key.padEnd(14)} lifeline ${fmt(l?.opsPerSec ?? NaN).padStart(7)} ops/s  ${ratio(pairedRatio(l, byLib.get('pg.Pool')), 1)} pg.Pool  ${ratio(pairedRatio(l, byLib.get('postgres.js')), 1)} postgres.js`);
  }
  for (const c of checks) console.log(`  [${c.met ? 'met ' : 'MISS'}] ${c.target}: ${c.detail}`);
} finally {
  await cluster.destroy();
}
