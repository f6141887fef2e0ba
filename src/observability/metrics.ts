/**
 * Metrics on prom-client: a registry per process component (nothing is put on prom-client's global
 * registry), metric factories that check Prometheus naming conventions, and an HTTP server for
 * /metrics and /healthz.
 *
 * The factories return prom-client's own classes (a counter also knows its total, synchronously,
 * for heartbeats and logs), so everything prom-client documents applies: `inc(value)`,
 * `inc(labels, value)`, `set`, `observe(labels, value)`, `collect` at scrape time.
 *
 * Moving from the hand-written registry this replaces: `new MetricsRegistry()`, `counter(name,
 * help)`, `gauge(name, help, read?)`, `histogram(name, help, buckets)`, `inc(by)`, `set(v)`,
 * `observe(v)` and `total()` are unchanged; labels are declared (`labelNames`, last argument) and
 * come first (`inc(labels, by)`, was `inc(by, labels)`); `render()` is async; a counter's name must
 * end in `_total` and no other's may.
 */
import { createServer, type Server } from 'node:http';
import {
  collectDefaultMetrics,
  Counter as PromCounter,
  Gauge,
  Histogram,
  type CounterConfiguration,
  type LabelValues,
  Registry,
} from 'prom-client';

export { Gauge, Histogram };

/** Label values of one series. */
export type Labels = Record<string, string>;

/** One series of a gauge read at scrape time. */
export interface Sample {
  labels: Labels;
  value: number;
}

/**
 * What a collected gauge reads at scrape time: one number (a gauge without labels) or every series
 * (series not returned are dropped: a key no longer held disappears). May be async.
 */
export type GaugeRead = () => number | Sample[] | Promise<number | Sample[]>;

/**
 * A prom-client counter that also keeps its total over every label set, readable synchronously
 * (prom-client's own `get()` is async). Exemplars are not enabled.
 */
export class Counter<T extends string = string> extends PromCounter<T> {
  private sum = 0;

  constructor(config: CounterConfiguration<T>) {
    // no `registers`: no registry at all (prom-client's default is its global one)
    super({ registers: [], ...config, enableExemplars: false });
    // prom-client sets `inc` on the instance (its exemplar or plain variant); labels() children call it too
    const inc = this.inc.bind(this) as (labels?: LabelValues<T> | number, value?: number) => void;
    this.inc = ((labelsOrValue?: LabelValues<T> | number, value?: number): void => {
      // prom-client checks the value (no decrease, finite) and throws before anything is counted
      inc(labelsOrValue, value);
      this.sum += typeof labelsOrValue === 'number' ? labelsOrValue : (value ?? 1);
    }) as PromCounter<T>['inc'];
  }

  override reset(): void {
    super.reset();
    this.sum = 0;
  }

  /** The sum of every series. */
  total(): number {
    return this.sum;
  }
}

function checkName(name: string, kind: 'counter' | 'gauge' | 'histogram'): void {
  if (kind === 'counter' && !name.endsWith('_total')) throw new Error(`counter ${name}: a counter's name ends in _total`);
  if (kind !== 'counter' && name.endsWith('_total')) throw new Error(`${kind} ${name}: only counters end in _total`);
  if (/_(ms|milliseconds|sec|kb|mb|gb)(_|$)/.test(name)) throw new Error(`${kind} ${name}: use base units (seconds, bytes)`);
}

/** A prom-client registry with factories for its metrics; one per process component. */
export class MetricsRegistry extends Registry {
  /** A counter; `labelNames` are the labels every `inc` gives. */
  counter<T extends string = string>(name: string, help: string, labelNames: readonly T[] = []): Counter<T> {
    checkName(name, 'counter');
    return new Counter<T>({ name, help, labelNames, registers: [this] });
  }

  /**
   * A counter read at scrape time from a count that only grows (an engine's retraces, busy time):
   * it moves by what the count grew since the last scrape. `read` may be async.
   */
  counterFrom(name: string, help: string, read: () => number | Promise<number>): Counter {
    checkName(name, 'counter');
    let seen = 0;
    const c: Counter = new Counter({
      name,
      help,
      registers: [this],
      async collect() {
        const v = await read();
        if (v > seen) {
          c.inc(v - seen);
          seen = v;
        }
      },
    });
    return c;
  }

  /** A gauge set by its owner or, with `read`, read at scrape time. */
  gauge<T extends string = string>(name: string, help: string, read?: GaugeRead, labelNames: readonly T[] = []): Gauge<T> {
    checkName(name, 'gauge');
    const g: Gauge<T> = new Gauge<T>({
      name,
      help,
      labelNames,
      registers: [this],
      ...(read && {
        async collect() {
          const v = await read();
          if (typeof v === 'number') {
            g.set(v);
            return;
          }
          g.reset();
          for (const s of v) g.set(s.labels as LabelValues<T>, s.value);
        },
      }),
    });
    return g;
  }

  /** A histogram with these bucket upper bounds. */
  histogram<T extends string = string>(name: string, help: string, buckets: number[], labelNames: readonly T[] = []): Histogram<T> {
    checkName(name, 'histogram');
    return new Histogram<T>({ name, help, buckets, labelNames, registers: [this] });
  }

  /**
   * Adds prom-client's process and Node.js metrics (`process_*`, `nodejs_*`, after `prefix`). They
   * watch the whole process (event loop delay, GC): one registry per process should have them.
   * prom-client's gauges named `*_total` (`nodejs_active_handles_total` and its kind: sums of the
   * per-type `nodejs_active_handles` series) are left out, as only counters end in `_total`.
   */
  collectDefaults(prefix = ''): this {
    const before = new Set(this.getMetricsAsArray().map((m) => m.name));
    collectDefaultMetrics({ register: this, prefix });
    for (const m of this.getMetricsAsArray())
      if (!before.has(m.name) && m.name.endsWith('_total') && !(m instanceof PromCounter)) this.removeSingleMetric(m.name);
    return this;
  }

  /** Prometheus text exposition format (runs the metrics' collect functions). */
  render(): Promise<string> {
    return this.metrics();
  }
}

/** What GET /healthz answers: 200 `ok` when ok, else 503 with this object as JSON. */
export type HealthCheck = () => { ok: boolean; [k: string]: unknown };

/**
 * Serves `registry.metrics()` at GET /metrics (500 with the reason when a collect fails) and
 * `health()` at GET /healthz (always ok without one). Resolves once listening; close() stops it.
 */
export function serveMetrics(registry: Registry, port: number, host = '0.0.0.0', health?: HealthCheck): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        (e: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`metrics could not be collected: ${e.message}\n`);
        },
      );
    } else if (req.method === 'GET' && req.url === '/healthz') {
      const h = health?.() ?? { ok: true };
      if (h.ok) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok\n');
      } else {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify(h)}\n`);
      }
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
