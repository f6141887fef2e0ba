/**
 * Metrics without Redis: the prom-client registry and its naming checks, serveMetrics (/metrics,
 * /healthz), and the worker's registry, fresh and after a batch, checked by `promtool check metrics`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { register as globalRegistry } from 'prom-client';
import { Counter, MetricsRegistry, serveMetrics } from '../../src/observability/metrics.js';
import type { Engine } from '../../src/worker/engine.js';
import { createWorkerMetrics, observeBatch, type MetricSources } from '../../src/worker/metrics.js';
import type { QueueStat } from '../../src/worker/queue-stats.js';
import { promtoolCheck, promtoolMissing } from '../helpers/promtool.js';

/** The value of one sample line (`name{labels} value`), or undefined when the text has none. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('registry: Prometheus text with HELP, TYPE, escaped labels and histogram buckets; nothing on the global registry', async () => {
  const globalBefore = globalRegistry.getMetricsAsArray().length;
  const r = new MetricsRegistry();
  const c = r.counter('x_total', 'things', ['key']);
  c.inc({ key: 'a"b' }, 2);
  c.inc({ key: 'c' });
  r.gauge('g', 'a gauge', () => 4);
  const h = r.histogram('h_seconds', 'times', [0.1, 1]);
  h.observe(0.5);
  const text = await r.render();
  assert.match(text, /# HELP x_total things\n# TYPE x_total counter\nx_total\{key="a\\"b"\} 2\nx_total\{key="c"\} 1\n/);
  assert.match(text, /# TYPE g gauge\ng 4\n/);
  assert.match(
    text,
    /h_seconds_bucket\{le="0.1"\} 0\nh_seconds_bucket\{le="1"\} 1\nh_seconds_bucket\{le="\+Inf"\} 1\nh_seconds_sum 0.5\nh_seconds_count 1\n/,
  );
  // a second component has its own registry: the same name is no conflict
  new MetricsRegistry().counter('x_total', 'things');
  new Counter({ name: 'loose_total', help: 'made without a registry' }).inc();
  assert.equal(globalRegistry.getMetricsAsArray().length, globalBefore);
  assert.throws(() => r.counter('x_total', 'again'), /already been registered/);
});

test('registry: names follow the conventions (counters end in _total, nothing else does, base units)', () => {
  const r = new MetricsRegistry();
  assert.throws(() => r.counter('jobs', 'x'), /ends in _total/);
  assert.throws(() => r.gauge('jobs_total', 'x'), /only counters/);
  assert.throws(() => r.histogram('wait_total', 'x', [1]), /only counters/);
  assert.throws(() => r.histogram('wait_ms', 'x', [1]), /base units/);
  assert.throws(() => r.gauge('cache_mb', 'x'), /base units/);
  assert.throws(() => r.gauge('bad-name', 'x'), /Invalid metric name/);
  r.counter('jobs_total', 'x');
  r.gauge('wait_seconds', 'x');
});

test('counter: total() sums every series, labels() children included; a decrease is refused and counts nothing', async () => {
  const r = new MetricsRegistry();
  const c = r.counter('n_total', 'n', ['key']);
  c.inc({ key: 'a' }, 3);
  c.inc({ key: 'b' });
  c.labels({ key: 'b' }).inc(2);
  assert.throws(() => c.inc({ key: 'a' }, -1), /not possible to decrease/);
  assert.equal(c.total(), 6);
  const plain = r.counter('p_total', 'p');
  plain.inc();
  plain.inc(2);
  assert.equal(plain.total(), 3);
  assert.equal(sample(await r.render(), 'n_total{key="a"}'), 3);
  c.reset();
  assert.equal(c.total(), 0);
});

test('read at scrape time: counterFrom moves by what its count grew; a labelled gauge shows only the series it returns', async () => {
  const r = new MetricsRegistry();
  let count = 2;
  r.counterFrom('c_total', 'c', () => count);
  let keys = ['a', 'b'];
  r.gauge('w', 'w', () => keys.map((k, i) => ({ labels: { key: k }, value: i + 1 })), ['key']);
  let text = await r.render();
  assert.equal(sample(text, 'c_total'), 2);
  assert.equal(sample(text, 'w{key="b"}'), 2);
  count = 5;
  keys = ['b'];
  text = await r.render();
  assert.equal(sample(text, 'c_total'), 5);
  assert.equal(sample(text, 'w{key="a"}'), undefined);
  assert.equal(sample(text, 'w{key="b"}'), 1);
});

test('serveMetrics: /metrics in the registry content type, /healthz 200 or 503 with the reason, 404, 500 when a collect fails', async () => {
  const r = new MetricsRegistry();
  r.counter('served_total', 'x').inc(7);
  let health: { ok: boolean; [k: string]: unknown } = { ok: true };
  let failing = false;
  r.gauge('flaky', 'fails on demand', () => {
    if (failing) throw new Error('no source');
    return 1;
  });
  const server = await serveMetrics(r, 0, '127.0.0.1', () => health);
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const m = await fetch(`${base}/metrics`);
    assert.equal(m.status, 200);
    assert.equal(m.headers.get('content-type'), r.contentType);
    assert.equal(sample(await m.text(), 'served_total'), 7);
    const ok = await fetch(`${base}/healthz`);
    assert.deepEqual([ok.status, await ok.text()], [200, 'ok\n']);
    health = { ok: false, problems: [{ key: 'k', problem: 'refused' }] };
    const bad = await fetch(`${base}/healthz`);
    assert.equal(bad.status, 503);
    assert.deepEqual(await bad.json(), health);
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    failing = true;
    const broken = await fetch(`${base}/metrics`);
    assert.equal(broken.status, 500);
    assert.match(await broken.text(), /no source/);
  } finally {
    await new Promise((done) => server.close(done));
  }
});

/** Sources of a worker that holds one key; `queues` fails while `queueDown` is set. */
function fakeSources() {
  const s = {
    queueDown: false,
    stat: { key: 'tiny:p16:n16:greedy', waiting: 3, active: 2, delayed: 1, oldestAgeSeconds: 4.5 } as QueueStat,
    engineStats: {
      compiles: 4,
      retraces: 0,
      evictions: 0,
      bytes: 1024,
      tensors: 12,
      tensorBytes: 4096,
      pipelines: 57,
      pipelinesAfterWarmup: 0,
      variantCompileSeconds: { 'tiny:p16:n16:greedy:b4': 2.5 },
    },
  };
  const engine = {
    kind: 'compiler',
    backend: 'wasm',
    kernelProvider: 'onednn + xnnpack',
    kernels: 'native',
    threads: 2,
    stats: () => s.engineStats,
  } as unknown as Engine;
  const sources: MetricSources = {
    worker: 'w1',
    state: () => 'running',
    engine: () => engine,
    keysHeld: () => 1,
    keysCompileFailed: () => 0,
    keysRefused: () => 0,
    busyMs: () => 1500,
    queues: async () => {
      if (s.queueDown) throw new Error('redis is down');
      return [s.stat];
    },
  };
  return { s, sources };
}

test('worker registry: engine, state, key and queue series from their sources; a failed queue read keeps the last values and is counted', async () => {
  const { s, sources } = fakeSources();
  const m = createWorkerMetrics(sources);
  const key = 'tiny:p16:n16:greedy';
  observeBatch(m, key, { B: 4, rows: 3, seconds: 0.2, promptTokens: 20, bucketTokens: 48, generatedTokens: 9 });
  let text = await m.registry.render();
  const at = (series: string) => sample(text, series);
  assert.deepEqual(
    [
      at(`batchgen_rows_total{key="${key}"}`),
      at(`batchgen_dummy_rows_total{key="${key}"}`),
      at(`batchgen_generated_tokens_total{key="${key}"}`),
      at(`batchgen_prompt_tokens_total{key="${key}"}`),
      at(`batchgen_prompt_bucket_tokens_total{key="${key}"}`),
      at(`batchgen_batch_fill_ratio_bucket{le="0.75",key="${key}"}`),
      at(`batchgen_batch_fill_ratio_bucket{le="0.5",key="${key}"}`),
    ],
    [3, 1, 9, 20, 48, 1, 0],
  );
  assert.deepEqual(
    [
      at('batchgen_worker_state{state="running"}'),
      at('batchgen_worker_state{state="idle"}'),
      at('batchgen_busy_seconds_total'),
      at('batchgen_tfjs_tensors'),
      at('batchgen_tfjs_memory_bytes'),
      at('batchgen_variant_cache_bytes'),
      at('batchgen_worker_info{worker="w1",engine="compiler",backend="wasm"}'),
      at('batchgen_backend_info{backend="wasm",kernel_provider="onednn + xnnpack"}'),
      at('batchgen_pipelines_total'),
      at('batchgen_pipelines_after_warmup_total'),
      at('batchgen_variant_compile_seconds{variant="tiny:p16:n16:greedy:b4"}'),
      at('batchgen_kernels_info{kernels="native",threads="2"}'),
    ],
    [1, 0, 1.5, 12, 4096, 1024, 1, 1, 57, 0, 2.5, 1],
  );
  assert.deepEqual(
    [
      at(`batchgen_queue_waiting_jobs{key="${key}"}`),
      at(`batchgen_queue_active_jobs{key="${key}"}`),
      at(`batchgen_queue_delayed_jobs{key="${key}"}`),
      at(`batchgen_queue_oldest_job_age_seconds{key="${key}"}`),
      at('batchgen_queue_read_errors_total'),
    ],
    [3, 2, 1, 4.5, 0],
  );
  s.queueDown = true;
  s.stat = { ...s.stat, waiting: 99 };
  text = await m.registry.render();
  assert.deepEqual([at(`batchgen_queue_waiting_jobs{key="${key}"}`), at('batchgen_queue_read_errors_total')], [3, 1]);
});

test("a fresh worker's registry (with process and Node.js metrics) and one after a batch pass promtool check metrics", {
  skip: promtoolMissing,
}, async () => {
  const { sources } = fakeSources();
  const m = createWorkerMetrics(sources, { defaultMetrics: true });
  const fresh = await m.registry.render();
  assert.match(fresh, /\nprocess_cpu_seconds_total /);
  assert.deepEqual(await promtoolCheck(fresh), { code: 0, output: '' });
  const key = 'tiny:p16:n16:greedy';
  observeBatch(m, key, { B: 2, rows: 1, seconds: 0.01, promptTokens: 5, bucketTokens: 16, generatedTokens: 2 });
  m.jobsCompleted.inc({ key });
  m.queueWaitSeconds.observe({ key }, 0.3);
  m.compiles.inc({ key }, 4);
  assert.deepEqual(await promtoolCheck(await m.registry.render()), { code: 0, output: '' });
  // the checker does find problems: a gauge named like a counter
  const bad = `${fresh}# HELP odd_total not a counter\n# TYPE odd_total gauge\nodd_total 1\n`;
  const r = await promtoolCheck(bad);
  assert.notEqual(r.code, 0);
  assert.match(r.output, /odd_total non-counter metrics should not have "_total" suffix/);
});
