// The doctor's output: a checklist for people (ANSI colour on a terminal), or one JSON object.
import type { CheckResult, Verdict } from './util.js';

export interface Report {
  ok: boolean;
  target: string;
  source: string;
  notes: string[];
  checks: CheckResult[];
  skipped: Array<{ name: string; reason: string }>;
}

const TITLES: Record<string, string> = {
  reachability: 'Reachability',
  auth: 'Auth',
  tls: 'TLS',
  timeouts: 'Timeouts',
  proxy: 'Proxy',
  headroom: 'Headroom',
  restarts: 'Restarts',
  'idle-probe': 'Idle probe',
};

const COLOURS: Record<Verdict, string> = { ok: '32', warn: '33', fail: '31' };

export function useColour(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv): boolean {
  return stream.isTTY === true && !env['NO_COLOR'];
}

export function formatJson(report: Report): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

export function formatText(report: Report, colour: boolean): string {
  const paint = (code: string, text: string): string => (colour ? `\x1b[${code}m${text}\x1b[0m` : text);
  const width = Math.max(...report.checks.map((c) => (TITLES[c.name] ?? c.name).length), 8) + 2;
  const indent = ' '.repeat(2 + 4 + 2 + width);
  const lines = [`${paint('1', 'pg-lifeline doctor')}  ${report.target}  (from ${report.source})`];
  for (const note of report.notes) lines.push(paint('2', `  ${note}`));
  lines.push('');
  for (const check of report.checks) {
    const verdict = paint(`1;${COLOURS[check.verdict]}`, check.verdict.padEnd(4));
    lines.push(`  ${verdict}  ${(TITLES[check.name] ?? check.name).padEnd(width)}${check.found}`);
    const advice = `→ ${check.advice}`;
    lines.push(`${indent}${check.verdict === 'ok' ? paint('2', advice) : advice}`);
  }
  for (const skip of report.skipped) {
    lines.push(`  ${paint('2', '-'.padEnd(4))}  ${(TITLES[skip.name] ?? skip.name).padEnd(width)}${paint('2', `not run: ${skip.reason}`)}`);
  }
  const count = (v: Verdict): number => report.checks.filter((c) => c.verdict === v).length;
  const summary = `${count('ok')} ok, ${count('warn')} warn, ${count('fail')} fail${report.skipped.length ? `, ${report.skipped.length} not run` : ''}`;
  lines.push('', report.ok ? paint('32', summary) : paint('1;31', summary));
  return `${lines.join('\n')}\n`;
}
