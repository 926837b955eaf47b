import { spawn } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  opsPerSec: number;
  top: Array<{ fn: string; where: string; selfMs: number; share: number }>;
  byArea: Array<{ area: string; share: number }>;
}

const here = path.dirname(fileURLToPath(import.meta.url));

function area(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)' || fn === '(program)') return fn;
  if (url.includes('/node_modules/pg-protocol/')) return 'pg-protocol';
  if (url.includes('/node_modules/pg/')) return 'pg';
  if (url.includes('/node_modules/')) return 'other node_modules';
  if (url.includes('/src/')) return 'pg-lifeline src/';
  if (url.includes('/bench/')) return 'bench loop';
  if (url.startsWith('node:internal/modules') || url.startsWith('node:internal/bootstrap')) return 'module loading (startup)';
  if (url.startsWith('node:') || url === '') return 'Node core / native';
  return 'other';
}

/** Runs bench/profile.ts under `node --cpu-prof` and aggregates self time per function. */
export async function profileScenario(url: string, args: string[], ms = 3000): Promise<ProfileSummary> {
  const dir = os.tmpdir();
  const name = `pg-lifeline-bench-${args.join('-').replace(/[^\w-]/g, '_')}-${process.pid}.cpuprofile`;
  const stdout = await new Promise<string>((resolve, reject) => {
    const child = spawn(process.execPath, ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-name', name, '--import', 'tsx', path.join(here, 'profile.ts'), ...args], {
      env: { ...process.env, BENCH_URL: url, BENCH_PROFILE_MS: String(ms) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const kill = setTimeout(() => child.kill('SIGKILL'), ms + 30_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(kill);
      if (code === 0) resolve(out);
      else reject(new Error(`profile child exited with ${code}`));
    });
  });
  const file = path.join(dir, name);
  if (!(await readdir(dir)).includes(name)) throw new Error(`no profile written at ${file}`);
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const sampleMs = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples?.length ?? 1);
  const self = new Map<string, { fn: string; where: string; hits: number; area: string }>();
  let total = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    if (hits === 0) continue;
    const { functionName, url: u, lineNumber } = node.callFrame;
    const fn = functionName || '(anonymous)';
    // tsx-compiled files report line 1: their lines are not the source's, so they are left out.
    const short = u.replace(/^file:\/\//, '').replace(/^.*\/(node_modules\/|src\/|bench\/)/, '$1');
    const where = u ? (lineNumber > 0 ? `${short}:${lineNumber + 1}` : short) : '';
    const key = `${fn}|${where}`;
    const entry = self.get(key) ?? { fn, where, hits: 0, area: area(u, fn) };
    entry.hits += hits;
    self.set(key, entry);
    total += hits;
  }
  const areas = new Map<string, number>();
  for (const e of self.values()) areas.set(e.area, (areas.get(e.area) ?? 0) + e.hits);
  const top = [...self.values()]
    .filter((e) => e.fn !== '(idle)')
    .sort((a, b) => b.hits - a.hits)
    .slice(0, 12)
    .map((e) => ({ fn: e.fn, where: e.where, selfMs: e.hits * sampleMs, share: e.hits / total }));
  const byArea = [...areas].sort((a, b) => b[1] - a[1]).map(([a, hits]) => ({ area: a, share: hits / total }));
  const opsPerSec = (JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { opsPerSec?: number }).opsPerSec ?? NaN;
  return { file, totalMs: total * sampleMs, opsPerSec, top, byArea };
}
