import { ACQUIRE_WAIT, ACQUIRE_WAIT_BUCKETS, STAT_METRICS, checkConstantLabels, labelSetKey, type MetricsHandle, type MetricsPool, type StatMetric } from './names.js';

// @opentelemetry/api is an optional peer dependency: the app passes its Meter in, and these
// interfaces describe the few parts used, so pg-lifeline neither loads nor type-imports it.

/** Attributes as OpenTelemetry takes them. */
export type OtelAttributes = Readonly<Record<string, string | number | boolean>>;

/** Instrument options (the `MetricOptions` of `@opentelemetry/api`) used here. */
export interface OtelInstrumentOptions {
  description?: string;
  unit?: string;
  advice?: { explicitBucketBoundaries?: number[] };
}

/** An observable instrument; only passed back to the meter, so nothing of it is used. */
export type OtelObservableLike = object;

/** The parts of a `Histogram` of `@opentelemetry/api` used here. */
export interface OtelHistogramLike {
  record(value: number, attributes?: OtelAttributes): void;
}

/** The parts of a `BatchObservableResult` of `@opentelemetry/api` used here. */
export interface OtelBatchResultLike {
  observe(observable: OtelObservableLike, value: number, attributes?: OtelAttributes): void;
}

/** A batch observable callback, as this module registers it. */
export type OtelBatchCallback = (result: OtelBatchResultLike) => void;

/** The parts of a `Meter` of `@opentelemetry/api` (1.4 or later) used here: what `metrics.getMeter(...)` returns. */
export interface OtelMeterLike {
  createObservableCounter(name: string, options?: OtelInstrumentOptions): OtelObservableLike;
  createObservableUpDownCounter(name: string, options?: OtelInstrumentOptions): OtelObservableLike;
  createHistogram(name: string, options?: OtelInstrumentOptions): OtelHistogramLike;
  addBatchObservableCallback(callback: OtelBatchCallback, observables: OtelObservableLike[]): void;
  removeBatchObservableCallback(callback: OtelBatchCallback, observables: OtelObservableLike[]): void;
}

/** Options of {@link registerOpenTelemetryMetrics}. */
export interface OpenTelemetryOptions {
  /** The meter to create the instruments on, e.g. `metrics.getMeter('my-app')`. */
  readonly meter: OtelMeterLike;
  /** Instrument name prefix. Default `pg_lifeline.`. */
  readonly prefix?: string | undefined;
  /** Constant attributes on every data point of this pool, such as `{ pool: 'main' }`; pools sharing a meter need different ones. */
  readonly attributes?: OtelAttributes | undefined;
}

interface Instruments {
  readonly observed: { readonly spec: StatMetric; readonly observable: OtelObservableLike }[];
  readonly histogram: OtelHistogramLike;
  /** Attribute sets in use, so two pools cannot write the same series. */
  readonly members: Set<string>;
}

// One set of instruments per meter and prefix, shared by the pools registered on it: each
// instrument is created once, and the pools are told apart by their attributes.
const instrumentSets = new WeakMap<OtelMeterLike, Map<string, Instruments>>();

/**
 * Exports `pool.stats()` and the acquire wait histogram through an OpenTelemetry meter. Sizes
 * are observable up-down counters (additive, so summing over pools is meaningful) and counters
 * observable counters, all read in one batch callback at collection time, so queries pay
 * nothing. The histogram `<prefix>acquire_wait` (unit `s`, explicit bucket advice from 0.1 ms to
 * 10 s) is fed by the pool's `checkout` event, which the pool emits only while someone listens.
 * Instrument names are dotted (`pg_lifeline.connections.idle`) with the unit apart, so a
 * Prometheus exporter that follows the OpenTelemetry spec (`_` for `.`, unit and `_total`
 * suffixes) derives the names `createPrometheusCollector` uses.
 *
 * Several pools can share one meter with different `attributes`. Throws if this meter and prefix
 * already observe a pool with the same attributes.
 *
 * `close()` stops observing the pool and recording its checkouts. Instruments cannot be deleted
 * in OpenTelemetry, so they stay on the meter; with cumulative temporality the SDK keeps
 * exporting the pool's last values, frozen, until the meter provider shuts down.
 */
export function registerOpenTelemetryMetrics(pool: MetricsPool, options: OpenTelemetryOptions): MetricsHandle {
  const { meter } = options;
  const prefix = options.prefix ?? 'pg_lifeline.';
  const attributes: OtelAttributes = { ...options.attributes };
  checkConstantLabels(attributes, 'attribute');

  let byPrefix = instrumentSets.get(meter);
  if (byPrefix === undefined) instrumentSets.set(meter, (byPrefix = new Map()));
  let instruments = byPrefix.get(prefix);
  if (instruments === undefined) byPrefix.set(prefix, (instruments = createInstruments(meter, prefix)));
  const { observed, histogram, members } = instruments;
  const memberKey = labelSetKey(attributes);
  if (members.has(memberKey)) {
    throw new TypeError(`pg-lifeline metrics: a pool with attributes ${memberKey} is already registered on this meter with prefix '${prefix}'; give each pool different attributes`);
  }
  members.add(memberKey);

  // One callback per pool: one stats() snapshot per collection, so its values agree with each other.
  const callback: OtelBatchCallback = (result) => {
    const stats = pool.stats();
    for (const { spec, observable } of observed) {
      const value = spec.read(stats);
      if (typeof value === 'number') {
        result.observe(observable, value, attributes);
      } else if (spec.label !== undefined) {
        for (const [key, n] of Object.entries(value)) if (n !== undefined) result.observe(observable, n, { ...attributes, [spec.label]: key });
      }
    }
  };
  const observables = observed.map((o) => o.observable);
  meter.addBatchObservableCallback(callback, observables);
  const onCheckout = (event: { readonly waitMillis: number }): void => histogram.record(event.waitMillis / 1000, attributes);
  pool.on('checkout', onCheckout);

  let closed = false;
  return {
    close() {
      if (closed) return;
      closed = true;
      pool.off('checkout', onCheckout);
      meter.removeBatchObservableCallback(callback, observables);
      members.delete(memberKey);
    },
  };
}

function createInstruments(meter: OtelMeterLike, prefix: string): Instruments {
  const observed = STAT_METRICS.map((spec) => {
    const name = prefix + spec.name;
    const options = { description: spec.help, unit: spec.unit };
    const observable = spec.kind === 'counter' ? meter.createObservableCounter(name, options) : meter.createObservableUpDownCounter(name, options);
    return { spec, observable };
  });
  const histogram = meter.createHistogram(prefix + ACQUIRE_WAIT.name, {
    description: ACQUIRE_WAIT.help,
    unit: ACQUIRE_WAIT.unit,
    advice: { explicitBucketBoundaries: [...ACQUIRE_WAIT_BUCKETS] },
  });
  return { observed, histogram, members: new Set() };
}
