import { ACQUIRE_WAIT, ACQUIRE_WAIT_BUCKETS, STAT_METRICS, checkConstantLabels, labelSetKey, type MetricsHandle, type MetricsPool, type StatMetric } from './names.js';

// prom-client is an optional peer dependency: the app passes it in, and these interfaces describe
// the few parts used, so pg-lifeline neither loads nor type-imports it.

/** Label values as prom-client takes them. */
export type PromLabels = Readonly<Record<string, string | number>>;

/** What every prom-client metric has, and all this module needs to hand one to a registry. */
export interface PromMetricLike {
  reset(): void;
}

/** The parts of a prom-client `Registry` used here. */
export interface PromRegistryLike {
  registerMetric(metric: PromMetricLike): void;
  getSingleMetric(name: string): unknown;
  removeSingleMetric(name: string): void;
}

/** Options common to the prom-client metric constructors used here. */
export interface PromMetricConfig {
  name: string;
  help: string;
  labelNames: readonly string[];
  /** Always empty: metrics are registered afterwards, so a name clash leaves nothing half-registered. */
  registers: never[];
  collect?: () => void;
}

/** The parts of a prom-client `Counter` used here. */
export interface PromCounterLike extends PromMetricLike {
  inc(labels: PromLabels, value: number): void;
}

/** The parts of a prom-client `Gauge` used here. */
export interface PromGaugeLike extends PromMetricLike {
  set(labels: PromLabels, value: number): void;
}

/** The parts of a prom-client `Histogram` used here. */
export interface PromHistogramLike extends PromMetricLike {
  labels(labels: PromLabels): { observe(value: number): void };
  zero(labels: PromLabels): void;
  remove(labels: PromLabels): void;
}

/** What `import * as promClient from 'prom-client'` gives, as far as it is used here (tested with prom-client 15). */
export interface PromClientLike {
  readonly Counter: new (config: PromMetricConfig) => PromCounterLike;
  readonly Gauge: new (config: PromMetricConfig) => PromGaugeLike;
  readonly Histogram: new (config: PromMetricConfig & { buckets: number[] }) => PromHistogramLike;
  readonly register: PromRegistryLike;
}

/** Options of {@link createPrometheusCollector}. */
export interface PrometheusOptions {
  /** The prom-client module: `import * as promClient from 'prom-client'`. */
  readonly client: PromClientLike;
  /** Where to register the metrics. Default: prom-client's global `register`. */
  readonly registry?: PromRegistryLike | undefined;
  /** Metric name prefix. Default `pg_lifeline_`. */
  readonly prefix?: string | undefined;
  /**
   * Constant labels on every series of this pool, such as `{ pool: 'main' }`. Pools sharing a
   * registry and prefix need the same label names and different values.
   */
  readonly labels?: PromLabels | undefined;
}

interface Member {
  readonly pool: MetricsPool;
  readonly labels: PromLabels;
}

interface Family {
  readonly metrics: { readonly name: string; readonly metric: PromMetricLike }[];
  readonly histogram: PromHistogramLike;
  /** Constant label names, fixed by the first pool: prom-client metrics have fixed label names. */
  readonly labelKey: string;
  /** By constant label set, so two pools cannot write the same series. */
  readonly members: Map<string, Member>;
}

// One family of metric objects per registry and prefix: a registry holds one metric per name, so
// pools sharing a registry share the metrics and are told apart by their constant labels.
const families = new WeakMap<PromRegistryLike, Map<string, Family>>();

/**
 * Exports `pool.stats()` and the acquire wait histogram to Prometheus through prom-client.
 * Sizes are gauges and counters `*_total` counters, all read from `pool.stats()` when the registry
 * is scraped, so queries pay nothing. The histogram `<prefix>acquire_wait_seconds` is fed by the
 * pool's `checkout` event, which the pool emits only while someone listens.
 *
 * Several pools can share one registry: give each different constant `labels` with the same
 * label names (`{ pool: 'main' }`, `{ pool: 'reports' }`); they share the metric objects. Pools
 * with different label names need different prefixes or registries. Throws if the registry
 * already holds a metric of the same name that pg-lifeline did not create.
 *
 * `close()` drops the pool's series and its `checkout` listener; the last pool to leave
 * unregisters the metrics from the registry.
 */
export function createPrometheusCollector(pool: MetricsPool, options: PrometheusOptions): MetricsHandle {
  const { client } = options;
  const registry = options.registry ?? client.register;
  const prefix = options.prefix ?? 'pg_lifeline_';
  const labels: PromLabels = { ...options.labels };
  checkConstantLabels(labels, 'label');

  let byPrefix = families.get(registry);
  if (byPrefix === undefined) families.set(registry, (byPrefix = new Map()));
  let found = byPrefix.get(prefix);
  // After registry.clear() (common between tests) the old family is gone from the registry: start afresh.
  const first = found?.metrics[0];
  if (found === undefined || (first !== undefined && registry.getSingleMetric(first.name) !== first.metric)) {
    found = createFamily(client, registry, prefix, Object.keys(labels).sort());
    byPrefix.set(prefix, found);
  }
  const family = found;
  const labelKey = JSON.stringify(Object.keys(labels).sort());
  if (labelKey !== family.labelKey) {
    throw new TypeError(`pg-lifeline metrics: pools sharing a registry and prefix need the same label names (${family.labelKey}, not ${labelKey}); use another prefix or registry`);
  }
  const memberKey = labelSetKey(labels);
  if (family.members.has(memberKey)) {
    throw new TypeError(`pg-lifeline metrics: a pool with labels ${memberKey} is already registered with prefix '${prefix}'; give each pool different label values`);
  }
  family.members.set(memberKey, { pool, labels });

  const { histogram, members } = family;
  histogram.zero(labels); // the series exists, at zero, before the first checkout
  const wait = histogram.labels(labels);
  const onCheckout = (event: { readonly waitMillis: number }): void => wait.observe(event.waitMillis / 1000);
  pool.on('checkout', onCheckout);

  let closed = false;
  return {
    close() {
      if (closed) return;
      closed = true;
      pool.off('checkout', onCheckout);
      histogram.remove(labels);
      members.delete(memberKey);
      if (members.size > 0 || byPrefix.get(prefix) !== family) return;
      byPrefix.delete(prefix);
      for (const { name, metric } of family.metrics) {
        // Leave alone a metric the app registered under the name after clearing the registry.
        if (registry.getSingleMetric(name) === metric) registry.removeSingleMetric(name);
      }
    },
  };
}

function createFamily(client: PromClientLike, registry: PromRegistryLike, prefix: string, constantNames: string[]): Family {
  const members = new Map<string, Member>();
  const metrics: { name: string; metric: PromMetricLike }[] = [];
  const config = (name: string, help: string, extra: readonly string[], collect?: () => void): PromMetricConfig => ({
    name,
    help,
    labelNames: [...constantNames, ...extra],
    registers: [],
    ...(collect === undefined ? {} : { collect }),
  });
  for (const spec of STAT_METRICS) {
    const name = prefix + spec.name.replaceAll('.', '_') + (spec.kind === 'counter' ? '_total' : '');
    const extra = spec.label === undefined ? [] : [spec.label];
    if (spec.kind === 'counter') {
      // A Counter, so the exposition says `counter`: each scrape resets it and adds the absolute value.
      const counter: PromCounterLike = new client.Counter(config(name, spec.help, extra, () => fill(counter, (l, v) => counter.inc(l, v), spec, members)));
      metrics.push({ name, metric: counter });
    } else {
      const gauge: PromGaugeLike = new client.Gauge(config(name, spec.help, extra, () => fill(gauge, (l, v) => gauge.set(l, v), spec, members)));
      metrics.push({ name, metric: gauge });
    }
  }
  const name = `${prefix}${ACQUIRE_WAIT.name}_seconds`;
  const histogram = new client.Histogram({ ...config(name, ACQUIRE_WAIT.help, []), buckets: [...ACQUIRE_WAIT_BUCKETS] });
  metrics.push({ name, metric: histogram });
  const registered: typeof metrics = [];
  try {
    for (const entry of metrics) {
      registry.registerMetric(entry.metric);
      registered.push(entry);
    }
  } catch (error) {
    // A name the app already uses: leave the registry as it was.
    for (const { name: taken } of registered) registry.removeSingleMetric(taken);
    throw error;
  }
  return { metrics, histogram, labelKey: JSON.stringify(constantNames), members };
}

// Runs in collect(). registry.metrics() calls every collect() in one synchronous pass, so all
// values of one scrape are from the same moment. Resetting first drops the series of closed pools.
function fill(metric: PromMetricLike, write: (labels: PromLabels, value: number) => void, spec: StatMetric, members: ReadonlyMap<string, Member>): void {
  metric.reset();
  for (const { pool, labels } of members.values()) {
    const value = spec.read(pool.stats());
    if (typeof value === 'number') {
      write(labels, value);
    } else if (spec.label !== undefined) {
      for (const [key, n] of Object.entries(value)) if (n !== undefined) write({ ...labels, [spec.label]: key }, n);
    }
  }
}
