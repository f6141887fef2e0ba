/**
 * A small metrics registry (counters, gauges, histograms with labels) rendered in Prometheus's text
 * format, and an optional HTTP server that serves it at /metrics.
 */
import { createServer, type Server } from 'node:http';

type Labels = Record<string, string>;

function labelKey(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  return keys.map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',');
}

abstract class Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge' | 'histogram',
  ) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) throw new Error(`metric name "${name}" is not a Prometheus name`);
  }
  abstract lines(): string[];
}

export class Counter extends Metric {
  private readonly values = new Map<string, number>();
  constructor(name: string, help: string) {
    super(name, help, 'counter');
  }
  inc(by = 1, labels: Labels = {}): void {
    if (by < 0) throw new Error(`counter ${this.name} cannot decrease (inc by ${by})`);
    const k = labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  total(): number {
    let s = 0;
    for (const v of this.values.values()) s += v;
    return s;
  }
  lines(): string[] {
    if (this.values.size === 0) return [`${this.name} 0`];
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`);
  }
}

export class Gauge extends Metric {
  private readonly values = new Map<string, number>();
  private readonly collect?: () => number;
  constructor(name: string, help: string, collect?: () => number) {
    super(name, help, 'gauge');
    this.collect = collect;
  }
  set(v: number, labels: Labels = {}): void {
    this.values.set(labelKey(labels), v);
  }
  get(labels: Labels = {}): number {
    if (this.collect && Object.keys(labels).length === 0) return this.collect();
    return this.values.get(labelKey(labels)) ?? 0;
  }
  lines(): string[] {
    if (this.collect) return [`${this.name} ${this.collect()}`];
    if (this.values.size === 0) return [`${this.name} 0`];
    return [...this.values].map(([k, v]) => `${this.name}${k ? `{${k}}` : ''} ${v}`);
  }
}

export class Histogram extends Metric {
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(
    name: string,
    help: string,
    readonly buckets: number[],
  ) {
    super(name, help, 'histogram');
  }
  observe(v: number, labels: Labels = {}): void {
    const k = labelKey(labels);
    let s = this.series.get(k);
    if (!s) {
      s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(k, s);
    }
    this.buckets.forEach((b, i) => {
      if (v <= b) s!.counts[i] += 1;
    });
    s.sum += v;
    s.count += 1;
  }
  lines(): string[] {
    const out: string[] = [];
    for (const [k, s] of this.series) {
      const sep = k ? `${k},` : '';
      this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{${sep}le="${b}"} ${s.counts[i]}`));
      out.push(`${this.name}_bucket{${sep}le="+Inf"} ${s.count}`);
      out.push(`${this.name}_sum${k ? `{${k}}` : ''} ${s.sum}`);
      out.push(`${this.name}_count${k ? `{${k}}` : ''} ${s.count}`);
    }
    return out;
  }
}

export class MetricsRegistry {
  private readonly metrics = new Map<string, Metric>();

  private add<M extends Metric>(m: M): M {
    if (this.metrics.has(m.name)) throw new Error(`metric ${m.name} registered twice`);
    this.metrics.set(m.name, m);
    return m;
  }
  counter(name: string, help: string): Counter {
    return this.add(new Counter(name, help));
  }
  gauge(name: string, help: string, collect?: () => number): Gauge {
    return this.add(new Gauge(name, help, collect));
  }
  histogram(name: string, help: string, buckets: number[]): Histogram {
    return this.add(new Histogram(name, help, buckets));
  }

  /** Prometheus text exposition format. */
  render(): string {
    const out: string[] = [];
    for (const m of this.metrics.values()) {
      out.push(`# HELP ${m.name} ${m.help}`, `# TYPE ${m.name} ${m.type}`, ...m.lines());
    }
    return `${out.join('\n')}\n`;
  }
}

/** What GET /healthz answers: 200 `ok` when ok, else 503 with this object as JSON. */
export type HealthCheck = () => { ok: boolean; [k: string]: unknown };

/**
 * Serves `registry.render()` at GET /metrics and `health()` at GET /healthz (always ok without one).
 * Resolves once listening; close() stops it.
 */
export function serveMetrics(registry: MetricsRegistry, port: number, host = '0.0.0.0', health?: HealthCheck): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(registry.render());
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
