import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fmt, ratio } from './lib.js';
import type { ProfileSummary } from './cpuprofile.js';
import { pairedRange, pairedRatio, type Results } from './scenarios/interleave.js';
import type { RecoverySummary } from './scenarios/recovery.js';
import type { BlackholeSummary } from './scenarios/blackhole.js';

const L = 'pg-lifeline';
const P = 'pg.Pool';
const J = 'postgres.js';

export function machine(serverVersion: string, loadBefore: number[]): string[] {
  const version = (p: string): string => (JSON.parse(readFileSync(new URL(p, import.meta.url), 'utf8')) as { version: string }).version;
  const cpus = os.cpus();
  return [
    `- CPU: ${cpus[0]?.model ?? 'unknown'}, ${cpus.length} cores (os.cpus()), ${os.arch()}`,
    `- Memory: ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB; ${os.type()} ${os.release()}`,
    `- Node ${process.version}; PostgreSQL ${serverVersion} (throwaway local server over TCP 127.0.0.1, fsync off, synchronous_commit off, shared_buffers 128MB)`,
    `- pg-lifeline ${version('../package.json')}, pg ${version('../node_modules/pg/package.json')}, postgres.js ${version('../node_modules/postgres/package.json')}`,
    `- Date: ${new Date().toISOString()}`,
    `- Load average (1/5/15 min) at start ${loadBefore.map((x) => x.toFixed(2)).join(' / ')}, at end ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}: other work shared the machine, so rounds vary (see "round spread").`,
  ];
}

export interface Check {
  target: string;
  met: boolean;
  detail: string;
}

/** Throughput table with ratios against pg.Pool and postgres.js. */
export function throughputTable(results: Results, libs: string[], checks: Check[] | undefined): string[] {
  const lines = ['| scenario | library | ops/s | round spread | p50 ms | p99 ms | × pg.Pool | × postgres.js | errors |', '|---|---|---|---|---|---|---|---|---|'];
  for (const [key, byLib] of results) {
    for (const name of libs) {
      const s = byLib.get(name);
      if (!s) continue;
      const bold = name === L ? '**' : '';
      lines.push(`| ${key} | ${name} | ${bold}${fmt(s.opsPerSec)}${bold} | ${(s.spread * 100).toFixed(0)} % | ${fmt(s.p50, 2)} | ${fmt(s.p99, 2)} | ${bold}${ratio(pairedRatio(s, byLib.get(P)), 1)}${bold} | ${ratio(pairedRatio(s, byLib.get(J)), 1)} | ${s.errors}${s.firstError ? ` (${s.firstError.slice(0, 40)})` : ''} |`);
    }
    const life = pairedRatio(byLib.get(L), byLib.get(P));
    const [low, high] = pairedRange(byLib.get(L), byLib.get(P));
    const detail = `${ratio(life, 1)} (rounds ${low.toFixed(2)}–${high.toFixed(2)})`;
    if (checks && !Number.isNaN(life)) checks.push({ target: `${key}: pg-lifeline ≥ 0.97× pg.Pool`, met: life >= 0.97, detail });
  }
  return lines;
}

/**
 * One check over every cell: the geometric mean of pg-lifeline's paired ratios to pg.Pool. A
 * single cell moves by several percent between runs on a shared 2-core machine; nine together do not.
 */
export function overallCheck(results: Results): Check {
  const ratios = [...results.values()].map((byLib) => pairedRatio(byLib.get(L), byLib.get(P))).filter((r) => !Number.isNaN(r));
  const mean = Math.exp(ratios.reduce((sum, r) => sum + Math.log(r), 0) / ratios.length);
  return { target: `steady throughput, all ${ratios.length} cells (geometric mean): pg-lifeline ≥ 0.97× pg.Pool`, met: mean >= 0.97, detail: ratio(mean, 1) };
}

export function variantsTable(results: Results, base: string, also?: string): string[] {
  const lines = [`| variant | ops/s | round spread | p50 ms | p99 ms | × ${base}${also ? ` | × ${also}` : ''} |`, `|---|---|---|---|---|---|${also ? '---|' : ''}`];
  for (const byLib of results.values()) {
    for (const [name, s] of byLib) {
      const vsAlso = also ? ` | ${ratio(pairedRatio(s, byLib.get(also)), 1)}` : '';
      lines.push(`| ${name} | ${fmt(s.opsPerSec)} | ${(s.spread * 100).toFixed(0)} % | ${fmt(s.p50, 2)} | ${fmt(s.p99, 2)} | ${ratio(pairedRatio(s, byLib.get(base)), 1)}${vsAlso} |`);
    }
  }
  return lines;
}

export function recoveryTable(fault: string, r: RecoverySummary, checks: Check[]): string[] {
  const lines = [
    `**${fault}**: the harness call took ${fmt(r.outageMs)} ms (median). Times are from the moment it returned. pg_ctl polls only every 100 ms, so the server was in fact accepting ${fmt(r.readyBeforeReturnMs)} ms earlier (median; postmaster.pid said "ready", polled every 2 ms): a negative time means the library got through before the harness call returned.`,
    '',
    '| library | first success after harness return, median (worst) ms | after postmaster ready, median (worst) ms | full throughput after harness return, median ms | failed calls, median |',
    '|---|---|---|---|---|',
  ];
  for (const [name, s] of r.byLib) lines.push(`| ${name} | ${fmt(s.firstOkMs)} (${fmt(s.worstFirstOkMs)}) | ${fmt(s.fromReadyMs)} (${fmt(s.worstFromReadyMs)}) | ${fmt(s.fullMs)} | ${fmt(s.errors)} |`);
  const l = r.byLib.get(L);
  if (l) checks.push({ target: `${fault}: pg-lifeline first success within 50 ms of the server accepting`, met: l.worstFirstOkMs <= 50, detail: `after harness return: median ${fmt(l.firstOkMs)} ms, worst ${fmt(l.worstFirstOkMs)} ms; after postmaster ready: median ${fmt(l.fromReadyMs)} ms, worst ${fmt(l.worstFromReadyMs)} ms` });
  return lines;
}

export function blackholeTable(b: BlackholeSummary): string[] {
  const lines = ['| library | call settles after, median ms | outcome | later query ok (rounds) | later query took, median ms |', '|---|---|---|---|---|'];
  for (const [name, s] of b.byLib) {
    const settled = s.settledRounds === 0 ? `never (≥ 5 000 in ${b.rounds}/${b.rounds})` : `${fmt(s.settleMs)}${s.settledRounds < b.rounds ? ` (${s.settledRounds}/${b.rounds} settled)` : ''}`;
    lines.push(`| ${name} | ${settled} | ${s.outcome} | ${s.laterOk}/${b.rounds} | ${fmt(s.laterMs)} |`);
  }
  return lines;
}

export function profileSection(title: string, p: ProfileSummary): string[] {
  return [
    `#### ${title}`,
    '',
    `pg-lifeline alone under \`node --cpu-prof\`: ${fmt(p.opsPerSec)} ops/s, ${fmt(p.totalMs)} ms sampled, profile \`${p.file}\`.`,
    `Self time by area: ${p.byArea.map((a) => `${a.area} ${(a.share * 100).toFixed(0)} %`).join(', ')}.`,
    '',
    '| function | where | self ms | share |',
    '|---|---|---|---|',
    ...p.top.map((t) => `| \`${t.fn}\` | ${t.where || '(native)'} | ${fmt(t.selfMs)} | ${(t.share * 100).toFixed(1)} % |`),
    '',
  ];
}
