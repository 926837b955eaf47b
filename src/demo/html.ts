// The self-contained HTML report: inline CSS, inline SVG charts, no external assets.
import { CELL_COLUMNS, describeKind, errorGroups, faultRows, headline, LEAD_SECONDS, LISTEN_COLUMNS, rowLabel } from './breakdown.js';
import { LISTEN_NOTE } from './listen.js';
import { COLUMNS } from './summary.js';
import { CONFIGURATIONS } from './json.js';
import { LABEL, LIBS, type DemoResult, type FaultWindow, type LibSummary } from './model.js';

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
  const band = (cls: string, start: number, end: number): string =>
    `<rect class="${cls}" x="${x(start).toFixed(1)}" y="${PAD.top}" width="${Math.max(0, x(end) - x(start)).toFixed(1)}" height="${H - PAD.top - PAD.bottom}"/>`;
  const windows = result.windows.map((w: FaultWindow, i) => {
    // A kill or reset is over in milliseconds; keep its window visible.
    const end = Math.max(w.end ?? seconds, w.start + 0.4);
    const labelY = PAD.top - 4 - (i % 2) * 12;
    // Repeats of a fault a few seconds apart would overprint each other's label.
    const label = result.windows[i - 1]?.label === w.label ? '' : `<text x="${x(w.start).toFixed(1)}" y="${labelY}">${escape(w.label)}</text>`;
    if (w.gaps?.length) {
      // An idle window is no outage: its gaps are idle on purpose, its bursts are work as usual.
      const gaps = w.gaps.map((g) => band('gap', g.start, g.end ?? end)).join('');
      return `<g class="idle" data-fault="${escape(w.label)}">${band('idle-window', w.start, end)}${gaps}${label}</g>`;
    }
    return `<g class="fault" data-fault="${escape(w.label)}">${band('outage', w.start, end)}${label}</g>`;
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

function totalsTable(result: DemoResult): string {
  const head = `<tr><th>library</th>${COLUMNS.map(([name]) => `<th>${escape(name)}</th>`).join('')}</tr>`;
  const rows = result.libs.map((s) => `<tr data-library="${s.lib}"><th>${LABEL[s.lib]}</th>${COLUMNS.map(([, get]) => `<td>${escape(get(s))}</td>`).join('')}</tr>`);
  return `<table id="summary">${head}${rows.join('')}</table>`;
}

function faultTable(result: DemoResult, listen: boolean): string {
  const libs = result.libs.map((s) => s.lib);
  const columns = listen ? LISTEN_COLUMNS : CELL_COLUMNS;
  const lead = listen ? '<th></th><th></th>' : '<th></th>';
  const groups = `<tr>${lead}${libs.map((lib) => `<th colspan="${columns.length}" class="group">${LABEL[lib]}</th>`).join('')}</tr>`;
  const head = `<tr><th>fault</th>${listen ? '<th>sent</th>' : ''}${libs.map(() => columns.map(([name]) => `<th>${escape(name)}</th>`).join('')).join('')}</tr>`;
  const rows = faultRows(result).map((row) => {
    const cells = libs.map((lib) =>
      columns
        .map(([name, get]) => {
          const cell = row.cells[lib];
          const text = row.start === null && name === 'first ok' ? '-' : get(cell);
          // Losses are bad; told ones a little less, so "told" is marked only when it falls short of "lost".
          const bad = listen ? (name === 'lost' && cell.lost > 0) || (name === 'told' && cell.told < cell.lost) : text !== '0' && text !== '-' && !text.endsWith(' ms');
          return `<td${bad ? ' class="bad"' : ''}>${escape(text)}</td>`;
        })
        .join(''),
    );
    const sent = listen ? `<td>${row.cells[libs[0] ?? 'pg'].sent}</td>` : '';
    return `<tr data-fault="${escape(row.label)}"><th>${escape(rowLabel(row))}</th>${sent}${cells.join('')}</tr>`;
  });
  return `<table id="${listen ? 'listen' : 'faults'}">${groups}${head}${rows.join('')}</table>`;
}

function errorTables(result: DemoResult): string {
  return result.libs
    .map((lib) => {
      const groups = errorGroups(lib);
      if (groups.length === 0) return `<h3>${LABEL[lib.lib]}</h3><p>No errors.</p>`;
      const rows = groups.map(
        (k) =>
          `<tr><td>${k.count}</td><td><code class="code">${escape(k.code || '(no code)')}</code>${k.lifelineCode ? ` <code>${escape(k.lifelineCode)}</code>` : ''}</td>` +
          `<td>${escape(k.cause ?? '-')}</td><td>${escape(describeKind(k).split(', ').pop() ?? '')}</td><td class="example">${escape(k.example)}</td></tr>`,
      );
      return `<h3>${LABEL[lib.lib]}</h3><table class="errors" data-library="${lib.lib}"><tr><th>count</th><th>code</th><th>cause</th><th>outcome</th><th>example message</th></tr>${rows.join('')}</table>`;
    })
    .join('\n');
}

/** The whole report as one HTML document. */
export function renderHtml(result: DemoResult, generatedAt: Date): string {
  const libLegend = result.libs.map((s) => `<span><i style="background:${COLOUR[s.lib]}"></i>${LABEL[s.lib]}</span>`).join(' ');
  const shading =
    '<span><b class="swatch outage"></b>fault (outage, kill, reset)</span> <span><b class="swatch idle-window"></b>idle_session_timeout on: bursts of work</span> ' +
    '<span><b class="swatch gap"></b>idle gap: no work on purpose</span>';
  const faults = result.windows.map((w) => `<li>${w.start.toFixed(1)}–${(w.end ?? result.seconds).toFixed(1)} s: ${escape(w.label)}</li>`).join('');
  const skipped = result.skipped.length ? `<p id="skipped">Not played:</p><ul id="skipped-faults">${result.skipped.map((s) => `<li>${escape(s)}</li>`).join('')}</ul>` : '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pg-lifeline demo: pg.Pool vs pg-lifeline under faults</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child{text-align:left}th.group{text-align:center}#faults td,#faults tbody th{white-space:nowrap}
#faults{font-size:13px}#faults th,#faults td{padding:.25em .4em}
table.errors th{text-align:left}td.bad{background:#fff0f0;font-weight:600}
table.errors td{text-align:left;vertical-align:top}table.errors td:first-child{text-align:right}td.example{font-size:13px}
figure{margin:1.5em 0}figcaption{font-weight:600}#headline{font-size:1.15em;font-weight:600}
svg{width:100%;height:auto;background:#fafafa}.outage{fill:#f03e3e;fill-opacity:.14}.idle-window{fill:#f59f00;fill-opacity:.08}
.gap{fill:#868e96;fill-opacity:.22}
.fault text,.idle text,.tick{font-size:10px;fill:#555}.axis{stroke:#999}
.legend i{display:inline-block;width:14px;height:4px;margin:0 .4em 3px 1em;vertical-align:middle}
.swatch{display:inline-block;width:14px;height:12px;margin:0 .4em -1px 1em;border:1px solid #ccc}
.swatch.outage{background:rgba(240,62,62,.3)}.swatch.idle-window{background:rgba(245,159,0,.18)}.swatch.gap{background:rgba(134,142,150,.4)}
.note{color:#666}
</style></head><body>
<h1>pg.Pool vs pg-lifeline under faults</h1>
<p id="headline">${escape(headline(result.libs, result.sent, result.seconds))}</p>
<p>The same workload (reads, inserts, transfers in transactions, each library on its own rows; ${result.seconds} s) ran through
plain <code>pg.Pool</code> (configured as its docs advise) and through pg-lifeline (default options, as its README tells
users), each in its own process, through a fault proxy in front of ${escape(result.server)}. A crashed process was restarted and counted. Generated ${generatedAt.toISOString()}.</p>
<ul id="configurations">${LIBS.map((lib) => `<li><b>${LABEL[lib]}</b>: ${escape(CONFIGURATIONS[lib])}</li>`).join('')}</ul>
${skipped}
<h2>Per fault</h2>
${faultTable(result, false)}
<p class="note">Each op counts under the fault that last struck before it started (from ${LEAD_SECONDS} s before it, for ops
already in flight). <b>unknown</b>: the error says the work may have taken effect (<code>isOutcomeUnknown(err)</code>);
<b>not applied</b>: it says the work did not take effect; <b>other</b>: it does not say. <b>hung</b>: ops still pending
after the watchdog. <b>first ok</b>: from the fault's end (an idle window: each idle gap's end, the worst) to the next success.</p>
<h2>LISTEN per fault</h2>
${faultTable(result, true)}
<p class="note">${escape(LISTEN_NOTE)}</p>
<h2>Totals</h2>
${totalsTable(result)}
<p class="legend">${libLegend}</p>
<p class="legend">${shading}</p>
${chart('Successful operations per second', result, (s) => s.okSeries)}
${chart('Errors per second', result, (s) => s.errorSeries)}
<h2>Faults</h2><ol>${faults}</ol>
<h2>Errors by code and cause</h2>
${errorTables(result)}
<p class="note">Lost writes: writes the library acknowledged that are not in the database afterwards.
Recovery: median ms over the faults from a fault's end to the next successful operation.</p>
</body></html>
`;
}
