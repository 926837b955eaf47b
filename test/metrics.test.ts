import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { AggregationTemporality, DataPointType, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type Histogram, type MetricData } from '@opentelemetry/sdk-metrics';
import * as promClient from 'prom-client';
import { Pool, type PoolOptions, type PoolStats } from '../src/index.js';
import { registerOpenTelemetryMetrics } from '../src/metrics/opentelemetry.js';
import { createPrometheusCollector } from '../src/metrics/prometheus.js';
import { PgCluster } from './harness/cluster.js';
import { waitFor } from './harness/wait.js';

let cluster: PgCluster;
let counter = 0;

before(async () => {
  cluster = await PgCluster.start();
});
after(async () => {
  await cluster.destroy();
});

function makePool(options: PoolOptions = {}): { pool: Pool; app: string } {
  const app = `metrics-${process.pid}-${++counter}`;
  return { pool: new Pool({ ...cluster.clientConfig(), application_name: app, ...options }), app };
}

// Checkouts that wait (max 3, 12 at once), then a killed backend: evictions, a failed probe or an
// invalidation, and new connections, so most counters move.
async function exercise(pool: Pool, app: string): Promise<void> {
  await Promise.all(Array.from({ length: 12 }, () => pool.query('SELECT pg_sleep(0.01)')));
  await cluster.terminateBackends(app);
  await waitFor('the killed connections to be evicted', () => pool.stats().evictions.died > 0);
  await Promise.all(Array.from({ length: 4 }, () => pool.query('SELECT 1')));
}

// ---- Prometheus text exposition: a strict reader, so malformed output fails the test ----

type Sample = { name: string; labels: Record<string, string>; value: number };
type Exposition = { types: Map<string, string>; help: Map<string, string>; samples: Sample[] };

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"`;
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*,?)?\\})? (\\S+)(?: -?\\d+)?$`);

function familyOf(name: string, types: ReadonlyMap<string, string>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = name.slice(0, -suffix.length);
    if (name.endsWith(suffix) && types.get(base) === 'histogram') return base;
  }
  return name;
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: Sample[] = [];
  const finished = new Set<string>();
  let current: string | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const comment = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (comment !== null) {
      const [, kind, name = '', rest = ''] = comment;
      assert.match(name, new RegExp(`^${NAME}$`), line);
      if (kind === 'HELP') {
        assert.ok(!help.has(name), `HELP repeated: ${line}`);
        help.set(name, rest);
      } else {
        assert.ok(!types.has(name), `TYPE repeated: ${line}`);
        assert.ok(['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest), line);
        types.set(name, rest);
      }
      continue;
    }
    assert.ok(!line.startsWith('#'), `unknown comment: ${line}`);
    const match = SAMPLE.exec(line);
    assert.ok(match !== null, `not a valid sample line: ${JSON.stringify(line)}`);
    const name = match[1] ?? '';
    const value = Number(match[match.length - 1]?.replace(/^\+?Inf$/, 'Infinity'));
    assert.ok(!Number.isNaN(value), line);
    const labels: Record<string, string> = {};
    for (const [, key = '', raw = ''] of (match[2] ?? '').matchAll(new RegExp(LABEL, 'g'))) {
      assert.ok(!(key in labels), `label repeated: ${line}`);
      labels[key] = raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    const family = familyOf(name, types);
    assert.ok(types.has(family), `sample before its TYPE: ${line}`);
    // A family's samples are contiguous.
    if (family !== current) {
      assert.ok(!finished.has(family), `family ${family} interleaved with another`);
      if (current !== undefined) finished.add(current);
      current = family;
    }
    if (types.get(family) === 'counter') assert.ok(value >= 0, `negative counter: ${line}`);
    samples.push({ name, labels, value });
  }
  checkHistograms(types, samples);
  return { types, help, samples };
}

// Buckets are cumulative, +Inf equals _count, and _sum is there, for every label set.
function checkHistograms(types: ReadonlyMap<string, string>, samples: readonly Sample[]): void {
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    const series = new Map<string, { le: number; value: number }[]>();
    for (const s of samples.filter((x) => x.name === `${family}_bucket`)) {
      const { le, ...rest } = s.labels;
      assert.ok(le !== undefined, `bucket without le in ${family}`);
      const key = key_(rest);
      series.set(key, [...(series.get(key) ?? []), { le: le === '+Inf' ? Infinity : Number(le), value: s.value }]);
    }
    for (const [key, buckets] of series) {
      buckets.sort((a, b) => a.le - b.le);
      for (let i = 1; i < buckets.length; i++) assert.ok((buckets[i]?.value ?? 0) >= (buckets[i - 1]?.value ?? 0), `${family}${key} buckets not cumulative`);
      const count = samples.find((s) => s.name === `${family}_count` && key_(s.labels) === key);
      assert.equal(buckets.at(-1)?.le, Infinity, `${family}${key} has no +Inf bucket`);
      assert.equal(count?.value, buckets.at(-1)?.value, `${family}${key}: +Inf bucket differs from _count`);
      assert.ok(samples.some((s) => s.name === `${family}_sum` && key_(s.labels) === key), `${family}${key} has no _sum`);
    }
  }
}

function key_(labels: Readonly<Record<string, string>>): string {
  return `{${Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}="${v}"`).join(',')}}`;
}

function value(exposition: Exposition, name: string, labels: Record<string, string>): number | undefined {
  const want = key_(labels);
  return exposition.samples.find((s) => s.name === name && key_(s.labels) === want)?.value;
}

// Every stats() field the exporters promise, as [Prometheus name, extra labels, value].
function expectedSeries(stats: PoolStats): [string, Record<string, string>, number][] {
  const series: [string, Record<string, string>, number][] = [
    ['pg_lifeline_connections', {}, stats.total],
    ['pg_lifeline_connections_idle', {}, stats.idle],
    ['pg_lifeline_connections_active', {}, stats.active],
    ['pg_lifeline_connections_max', {}, stats.max],
    ['pg_lifeline_connections_min', {}, stats.min],
    ['pg_lifeline_waiting', {}, stats.waiting],
    ['pg_lifeline_keepalive_interval_seconds', {}, stats.keepaliveIntervalMillis / 1000],
    ['pg_lifeline_learned_idle_kill_seconds', {}, (stats.learnedIdleKillMillis ?? 0) / 1000],
    ['pg_lifeline_last_outage_seconds', {}, (stats.lastOutage?.downMillis ?? 0) / 1000],
    ['pg_lifeline_acquired_total', {}, stats.acquired],
    ['pg_lifeline_connects_total', {}, stats.connects],
    ['pg_lifeline_connect_errors_total', {}, stats.connectErrors],
    ['pg_lifeline_validations_total', {}, stats.validations],
    ['pg_lifeline_failed_validations_total', {}, stats.failedValidations],
    ['pg_lifeline_invalidations_total', {}, stats.invalidations],
    ['pg_lifeline_suspensions_total', {}, stats.suspensions],
  ];
  for (const [reason, n] of Object.entries(stats.evictions)) series.push(['pg_lifeline_evictions_total', { reason }, n]);
  for (const [kind, n] of Object.entries(stats.retriesByKind)) series.push(['pg_lifeline_retries_total', { kind }, n ?? 0]);
  for (const [outcome, n] of Object.entries(stats.commitResolutions)) series.push(['pg_lifeline_commit_resolutions_total', { outcome }, n]);
  for (const [event, n] of Object.entries(stats.monitor)) series.push(['pg_lifeline_monitor_total', { event }, n]);
  series.push(
    ['pg_lifeline_listen_listeners', {}, stats.listen?.listeners ?? 0],
    ['pg_lifeline_listen_channels', {}, stats.listen?.channels ?? 0],
    ['pg_lifeline_listen_up', {}, stats.listen?.state === 'listening' ? 1 : 0],
    ['pg_lifeline_listen_last_downtime_seconds', {}, (stats.listen?.lastDowntimeMillis ?? 0) / 1000],
    ['pg_lifeline_listen_reconnects_total', {}, stats.listen?.reconnects ?? 0],
  );
  return series;
}

describe('Prometheus', () => {
  test('every stats() value is exported, with valid exposition, after real queries and a killed backend', async () => {
    const { pool, app } = makePool({ max: 3 });
    const registry = new promClient.Registry();
    const handle = createPrometheusCollector(pool, { client: promClient, registry, labels: { pool: 'main' } });
    const listener = await pool.listen('metrics_chan', () => {});
    try {
      await exercise(pool, app);
      // The kills in exercise() end the LISTEN session too (same application_name): it reconnects on its own.
      await waitFor('the LISTEN session to listen again', () => pool.stats().listen?.state === 'listening');
      const stats = pool.stats();
      assert.equal(stats.listen?.listeners, 1);
      assert.equal(stats.listen?.state, 'listening');
      // registry.metrics() runs every collect() before its first await: the same moment as `stats`.
      const text = await registry.metrics();
      const exposition = parseExposition(text);

      for (const [name, labels, expected] of expectedSeries(stats)) {
        assert.equal(value(exposition, name, { pool: 'main', ...labels }), expected, `${name}${key_(labels)}`);
        const family = exposition.types.get(name);
        assert.equal(family, name.endsWith('_total') ? 'counter' : 'gauge', name);
        assert.ok((exposition.help.get(name) ?? '').length > 0, `${name} has no HELP`);
      }
      assert.ok(stats.evictions.died > 0 && stats.acquired >= 16 && stats.connects > 3, JSON.stringify(stats));
      // Every series is one of those, or the histogram.
      const names = new Set(expectedSeries(stats).map(([n]) => n));
      for (const s of exposition.samples) assert.ok(names.has(s.name) || s.name.startsWith('pg_lifeline_acquire_wait_seconds_'), s.name);
      assert.equal(exposition.samples.filter((s) => s.name === 'pg_lifeline_evictions_total').length, 11);
      assert.equal(value(exposition, 'pg_lifeline_listen_up', { pool: 'main' }), 1);
    } finally {
      await listener.close();
      handle.close();
      await pool.end();
    }
  });

  test('the acquire wait histogram observes every real checkout', async () => {
    const { pool, app } = makePool({ max: 3 });
    const registry = new promClient.Registry();
    const handle = createPrometheusCollector(pool, { client: promClient, registry, labels: { pool: 'main' } });
    try {
      await exercise(pool, app);
      const stats = pool.stats();
      const exposition = parseExposition(await registry.metrics());
      assert.equal(exposition.types.get('pg_lifeline_acquire_wait_seconds'), 'histogram');
      assert.equal(value(exposition, 'pg_lifeline_acquire_wait_seconds_count', { pool: 'main' }), stats.acquired);
      // 12 statements of 10 ms on 3 connections: some checkouts waited 10 ms or more.
      const sum = value(exposition, 'pg_lifeline_acquire_wait_seconds_sum', { pool: 'main' }) ?? 0;
      assert.ok(sum >= 0.01 && sum < 10, `sum ${sum}`);
      const under10ms = value(exposition, 'pg_lifeline_acquire_wait_seconds_bucket', { pool: 'main', le: '0.01' }) ?? -1;
      assert.ok(under10ms >= 0 && under10ms < stats.acquired, `${under10ms} of ${stats.acquired} under 10 ms`);
    } finally {
      handle.close();
      await pool.end();
    }
  });

  test('a checkout event lands in the right bucket, in seconds', async () => {
    const { pool } = makePool();
    const registry = new promClient.Registry();
    const handle = createPrometheusCollector(pool, { client: promClient, registry });
    try {
      // Before any checkout the series exists at zero, so rate() works from the first scrape.
      let exposition = parseExposition(await registry.metrics());
      assert.equal(value(exposition, 'pg_lifeline_acquire_wait_seconds_count', {}), 0);
      pool.emit('checkout', { waitMillis: 3, validated: false });
      exposition = parseExposition(await registry.metrics());
      const bucket = (le: string): number | undefined => value(exposition, 'pg_lifeline_acquire_wait_seconds_bucket', { le });
      assert.deepEqual([bucket('0.0001'), bucket('0.0025'), bucket('0.005'), bucket('10'), bucket('+Inf')], [0, 0, 1, 1, 1]);
      assert.equal(value(exposition, 'pg_lifeline_acquire_wait_seconds_sum', {}), 0.003);
      // No constant labels: the series have no labels at all.
      assert.equal(value(exposition, 'pg_lifeline_connections_max', {}), 10);
    } finally {
      handle.close();
      await pool.end();
    }
  });

  test('two pools share a registry by label; close() removes a pool, then the metrics', async () => {
    const a = makePool({ max: 2 });
    const b = makePool({ max: 5 });
    const registry = new promClient.Registry();
    const handleA = createPrometheusCollector(a.pool, { client: promClient, registry, labels: { pool: 'a' } });
    const handleB = createPrometheusCollector(b.pool, { client: promClient, registry, labels: { pool: 'b' } });
    try {
      await a.pool.query('SELECT 1');
      await Promise.all([1, 2, 3].map(() => b.pool.query('SELECT 1')));
      let exposition = parseExposition(await registry.metrics());
      for (const [pool, stats] of [['a', a.pool.stats()], ['b', b.pool.stats()]] as const) {
        for (const [name, labels, expected] of expectedSeries(stats)) assert.equal(value(exposition, name, { pool, ...labels }), expected, `${pool} ${name}`);
        assert.equal(value(exposition, 'pg_lifeline_acquire_wait_seconds_count', { pool }), stats.acquired);
      }

      // The same labels again, or other label names, cannot share these metrics.
      assert.throws(() => createPrometheusCollector(b.pool, { client: promClient, registry, labels: { pool: 'a' } }), /already registered/);
      assert.throws(() => createPrometheusCollector(b.pool, { client: promClient, registry, labels: { db: 'x' } }), /same label names/);
      assert.throws(() => createPrometheusCollector(b.pool, { client: promClient, registry, labels: { reason: 'x' } }), /used by the exporter/);
      // ...but another prefix can.
      const other = createPrometheusCollector(b.pool, { client: promClient, registry, prefix: 'app_db_', labels: { db: 'x' } });
      assert.equal(value(parseExposition(await registry.metrics()), 'app_db_connections_max', { db: 'x' }), 5);
      other.close();

      handleA.close();
      handleA.close(); // idempotent
      assert.equal(a.pool.listenerCount('checkout'), 0);
      exposition = parseExposition(await registry.metrics());
      assert.ok(!exposition.samples.some((s) => s.labels.pool === 'a'), 'pool a still exported');
      assert.equal(value(exposition, 'pg_lifeline_connections_max', { pool: 'b' }), 5);
      assert.equal(value(exposition, 'pg_lifeline_acquire_wait_seconds_count', { pool: 'b' }), 3);

      handleB.close();
      assert.equal(b.pool.listenerCount('checkout'), 0);
      assert.deepEqual(registry.getMetricsAsArray(), []);
      // A new registration after everything closed starts afresh.
      createPrometheusCollector(a.pool, { client: promClient, registry, labels: { other: 'x' } }).close();
    } finally {
      handleA.close();
      handleB.close();
      await Promise.all([a.pool.end(), b.pool.end()]);
    }
  });

  test('the default registry, and a name already taken there', async () => {
    const { pool } = makePool();
    try {
      const handle = createPrometheusCollector(pool, { client: promClient });
      assert.ok(promClient.register.getSingleMetric('pg_lifeline_acquired_total') !== undefined);
      handle.close();
      assert.equal(promClient.register.getSingleMetric('pg_lifeline_acquired_total'), undefined);

      const registry = new promClient.Registry();
      const mine = new promClient.Gauge({ name: 'pg_lifeline_waiting', help: 'the app’s own', registers: [registry] });
      assert.throws(() => createPrometheusCollector(pool, { client: promClient, registry }), /already been registered/);
      // What was created before the clash is gone again; the app's metric is untouched.
      assert.deepEqual(registry.getMetricsAsArray(), [mine]);
      assert.equal(pool.listenerCount('checkout'), 0);

      // registry.clear() without close() (as between tests): registering again starts afresh, and
      // the stale handle's close() leaves the new metrics alone.
      const other = new promClient.Registry();
      const stale = createPrometheusCollector(pool, { client: promClient, registry: other, labels: { pool: 'x' } });
      other.clear();
      const fresh = createPrometheusCollector(pool, { client: promClient, registry: other, labels: { pool: 'x' } });
      stale.close();
      assert.equal(value(parseExposition(await other.metrics()), 'pg_lifeline_connections_max', { pool: 'x' }), 10);
      fresh.close();
      assert.deepEqual(other.getMetricsAsArray(), []);
      assert.equal(pool.listenerCount('checkout'), 0);
    } finally {
      await pool.end();
    }
  });
});

describe('OpenTelemetry', () => {
  function otel(): { provider: MeterProvider; collect: () => Promise<MetricData[]> } {
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const provider = new MeterProvider({ readers: [reader] });
    return {
      provider,
      async collect() {
        exporter.reset();
        await reader.forceFlush();
        return exporter.getMetrics().flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics));
      },
    };
  }

  function point(metrics: readonly MetricData[], name: string, attributes: Record<string, string>): unknown {
    const metric = metrics.find((m) => m.descriptor.name === name);
    return metric?.dataPoints.find((p) => key_(p.attributes as Record<string, string>) === key_(attributes))?.value;
  }

  test('observable instruments report stats() per pool, and the histogram every checkout', async () => {
    const { provider, collect } = otel();
    const a = makePool({ max: 3 });
    const b = makePool({ max: 4 });
    const meter = provider.getMeter('pg-lifeline-test');
    const handleA = registerOpenTelemetryMetrics(a.pool, { meter, attributes: { pool: 'a' } });
    const handleB = registerOpenTelemetryMetrics(b.pool, { meter, attributes: { pool: 'b' } });
    try {
      await exercise(a.pool, a.app);
      await b.pool.query('SELECT 1');
      const metrics = await collect();
      for (const [pool, stats] of [['a', a.pool.stats()], ['b', b.pool.stats()]] as const) {
        for (const [promName, labels, expected] of expectedSeries(stats)) {
          // The dotted OpenTelemetry name that becomes this Prometheus name.
          const name = promName.replace(/_total$/, '').replace(/^pg_lifeline_(connections|listen)_/, 'pg_lifeline_$1.').replace(/^pg_lifeline_/, 'pg_lifeline.');
          assert.equal(point(metrics, name, { pool, ...labels }), expected, `${pool} ${name}${key_(labels)}`);
        }
        const wait = point(metrics, 'pg_lifeline.acquire_wait', { pool }) as Histogram;
        assert.equal(wait.count, stats.acquired, `${pool} histogram count`);
      }
      const byName = new Map(metrics.map((m) => [m.descriptor.name, m]));
      // Counters are monotonic sums; sizes are non-monotonic sums (up-down counters), so they add up over pools.
      const monotonic = (name: string): boolean | undefined => {
        const metric = byName.get(name);
        return metric?.dataPointType === DataPointType.SUM ? metric.isMonotonic : undefined;
      };
      assert.equal(monotonic('pg_lifeline.acquired'), true);
      assert.equal(monotonic('pg_lifeline.evictions'), true);
      assert.equal(monotonic('pg_lifeline.connections.idle'), false);
      assert.equal(byName.get('pg_lifeline.acquire_wait')?.descriptor.unit, 's');
      const histogram = byName.get('pg_lifeline.acquire_wait');
      assert.equal(histogram?.dataPointType, DataPointType.HISTOGRAM);
      assert.deepEqual((histogram?.dataPoints[0]?.value as Histogram).buckets.boundaries, [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
      assert.ok(((point(metrics, 'pg_lifeline.acquire_wait', { pool: 'a' }) as Histogram).sum ?? 0) >= 0.01);

      assert.throws(() => registerOpenTelemetryMetrics(b.pool, { meter, attributes: { pool: 'a' } }), /already registered/);
      assert.throws(() => registerOpenTelemetryMetrics(b.pool, { meter, attributes: { kind: 'x' } }), /used by the exporter/);

      // After close(), pool a is no longer observed: its activity changes nothing.
      handleA.close();
      assert.equal(a.pool.listenerCount('checkout'), 0);
      const before = point(metrics, 'pg_lifeline.acquired', { pool: 'a' });
      await a.pool.query('SELECT 1');
      await b.pool.query('SELECT 1');
      const later = await collect();
      const stale = point(later, 'pg_lifeline.acquired', { pool: 'a' });
      assert.ok(stale === undefined || stale === before, `pool a still observed: ${String(stale)}`);
      assert.equal(point(later, 'pg_lifeline.acquired', { pool: 'b' }), 2);
      assert.equal((point(later, 'pg_lifeline.acquire_wait', { pool: 'b' }) as Histogram).count, 2);
    } finally {
      handleA.close();
      handleB.close();
      await Promise.all([a.pool.end(), b.pool.end(), provider.shutdown()]);
    }
  });

  test('a checkout event is recorded in seconds', async () => {
    const { provider, collect } = otel();
    const { pool } = makePool();
    const handle = registerOpenTelemetryMetrics(pool, { meter: provider.getMeter('wiring'), prefix: 'db.' });
    try {
      pool.emit('checkout', { waitMillis: 3, validated: false });
      const metrics = await collect();
      const wait = point(metrics, 'db.acquire_wait', {}) as Histogram;
      assert.equal(wait.count, 1);
      assert.equal(wait.sum, 0.003);
      assert.equal(point(metrics, 'db.connections.max', {}), 10);
    } finally {
      handle.close();
      await Promise.all([pool.end(), provider.shutdown()]);
    }
  });
});
