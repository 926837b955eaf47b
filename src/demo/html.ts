// The self-contained HTML report: inline CSS, inline SVG charts, no external assets.
import { COLUMNS, topErrors } from './summary.js';
import { LABEL, type DemoResult, type FaultWindow, type LibSummary } from './model.js';

const COLOUR: Record<LibSummary['lib'], string> = { pg: '#d9480f', 'pg-lifeline': '#1971c2' };
const W = 900;
const H = 220;
const PAD = { left: 48, right: 16, top: 34, bottom: 28 };

const escape = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

function chart(title: string, result: DemoResult, pick: (s: LibSummary) => number[]): string {
  const seconds = result.seconds;
  const max = Math.max(1, ...result.libs.flatMap(pick));
  const x = (t: number): number => PAD.left + (t / seconds) * (W - PAD.left - PAD.right);
  const y = (v: number): number => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const windows = result.windows.map((w: FaultWindow, i) => {
    // A kill or reset is over in milliseconds; keep its window visible.
    const end = Math.max(w.end ?? seconds, w.start + 0.4);
    const labelY = PAD.top - 4 - (i % 2) * 12;
    // Repeats of a fault a few seconds apart would overprint each other's label.
    const label = result.windows[i - 1]?.label === w.label ? '' : `<text x="${x(w.start).toFixed(1)}" y="${labelY}">${escape(w.label)}</text>`;
    return `<g class="fault" data-fault="${escape(w.label)}"><rect x="${x(w.start).toFixed(1)}" y="${PAD.top}" width="${(x(end) - x(w.start)).toFixed(1)}" height="${H - PAD.top - PAD.bottom}"/>${label}</g>`;
  });
  const series = result.libs.map((s) => {
    // Each 1 s bucket is drawn at its middle.
    const points = pick(s).map((v, i) => `${x(i + 0.5).toFixed(1)},${y(v).toFixed(1)}`);
    return `<polyline data-library="${s.lib}" fill="none" stroke="${COLOUR[s.lib]}" stroke-width="2" points="${points.join(' ')}"/>`;
  });
  const ticks = [];
  for (let t = 0; t <= seconds; t += seconds > 40 ? 10 : 5) ticks.push(`<text class="tick" x="${x(t).toFixed(1)}" y="${H - 8}">${t}s</text>`);
  return `<figure><figcaption>${escape(title)}</figcaption>
<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${escape(title)}">
<line class="axis" x1="${PAD.left}" y1="${H - PAD.bottom}" x2="${W - PAD.right}" y2="${H - PAD.bottom}"/>
<text class="tick" x="4" y="${PAD.top + 10}">${max}</text><text class="tick" x="4" y="${H - PAD.bottom}">0</text>
${windows.join('\n')}
${series.join('\n')}
${ticks.join('')}
</svg></figure>`;
}

function table(result: DemoResult): string {
  const head = `<tr><th>library</th>${COLUMNS.map(([name]) => `<th>${escape(name)}</th>`).join('')}</tr>`;
  const rows = result.libs.map((s) => `<tr data-library="${s.lib}"><th>${LABEL[s.lib]}</th>${COLUMNS.map(([, get]) => `<td>${escape(get(s))}</td>`).join('')}</tr>`);
  return `<table id="summary">${head}${rows.join('')}</table>`;
}

export function renderHtml(result: DemoResult, generatedAt: Date): string {
  const legend = result.libs.map((s) => `<span><i style="background:${COLOUR[s.lib]}"></i>${LABEL[s.lib]}</span>`).join(' ');
  const errors = result.libs
    .map((s) => `<li><b>${LABEL[s.lib]}</b>: ${topErrors(s, 5).map(escape).join('; ') || 'no errors'}</li>`)
    .join('');
  const faults = result.windows.map((w) => `<li>${w.start.toFixed(1)}–${(w.end ?? result.seconds).toFixed(1)} s: ${escape(w.label)}</li>`).join('');
  const skipped = result.skipped.length ? `<p class="note">${result.skipped.map(escape).join('<br>')}</p>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pg-lifeline demo: pg.Pool vs pg-lifeline under faults</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th:first-child{text-align:left}figure{margin:1.5em 0}figcaption{font-weight:600}
svg{width:100%;height:auto;background:#fafafa}.fault rect{fill:#f03e3e;fill-opacity:.12}
.fault text,.tick{font-size:10px;fill:#555}.axis{stroke:#999}
.legend i{display:inline-block;width:14px;height:4px;margin:0 .4em 3px 1em;vertical-align:middle}
.note{color:#666}
</style></head><body>
<h1>pg.Pool vs pg-lifeline under faults</h1>
<p>The same workload (reads, inserts, transfers in transactions; ${result.seconds} s) ran through plain <code>pg.Pool</code>
(with a pool <code>error</code> listener, as its docs advise) and through pg-lifeline (no listener), each in its own
process, through a fault proxy in front of ${escape(result.server)}. A crashed process was restarted and counted.
Shaded: fault windows. Generated ${generatedAt.toISOString()}.</p>
${table(result)}
<p class="legend">${legend}</p>
${chart('Successful operations per second', result, (s) => s.okSeries)}
${chart('Errors per second', result, (s) => s.errorSeries)}
<h2>Faults</h2><ol>${faults}</ol>${skipped}
<h2>Most frequent errors</h2><ul>${errors}</ul>
<p class="note">Lost writes: writes the library acknowledged that are not in the database afterwards.
Recovery: median ms from a fault's end to the next successful operation.</p>
</body></html>
`;
}
