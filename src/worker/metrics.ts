/**
 * The worker's metrics, in tables: counters per compile key (label `key`), counters and gauges read
 * when scraped (engine, key holding, queues), and histograms. Each worker has its own registry
 * (src/observability/metrics.ts); the README's "Observability" lists every name.
 */
import { type Counter, type Histogram, MetricsRegistry } from '../observability/metrics.js';
import type { Engine } from './engine.js';
import type { BatchState } from './micro-batcher.js';
import { type QueueStat, shareInFlight } from './queue-stats.js';

/** Counters labelled by compile key, by the name the worker uses: [Prometheus name, help]. */
const KEY_COUNTERS = {
  jobsCompleted: ['batchgen_jobs_completed_total', 'Jobs completed with a result'],
  jobsFailed: ['batchgen_jobs_failed_total', 'Jobs failed for good (error written)'],
  jobsRetried: ['batchgen_jobs_retried_total', 'Jobs failed and left to retry with backoff'],
  duplicates: ['batchgen_duplicate_deliveries_total', 'Results not written because the custom_id already had one'],
  isolated: ['batchgen_isolated_runs_total', 'Jobs run alone after their batch failed or after an earlier delivery'],
  batches: ['batchgen_batches_total', 'Batches run'],
  rows: ['batchgen_rows_total', 'Real rows run'],
  dummyRows: ['batchgen_dummy_rows_total', 'Masked dummy rows that padded batches to an allowed size'],
  tokens: ['batchgen_generated_tokens_total', 'Tokens generated for real rows'],
  promptTokens: ['batchgen_prompt_tokens_total', 'Real prompt tokens of real rows'],
  promptPaddedTokens: ['batchgen_prompt_bucket_tokens_total', 'Prompt bucket tokens of real rows (real + padding)'],
  compiles: ['batchgen_compiles_total', 'Variants compiled and warmed (one per batch size of a held key)'],
  compileSeconds: ['batchgen_compile_seconds_total', 'Seconds spent compiling and warming variants'],
} as const;

/** Histograms labelled by compile key: [Prometheus name, help, bucket upper bounds]. */
const KEY_HISTOGRAMS = {
  batchSeconds: [
    'batchgen_batch_seconds',
    'Seconds to generate one batch (the compiled function run)',
    [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
  ],
  queueWaitSeconds: [
    'batchgen_queue_wait_seconds',
    'Seconds from a job being enqueued to its batch being processed (each delivery)',
    [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
  ],
  batchFill: ['batchgen_batch_fill_ratio', 'Real rows over the batch size run (1 = no dummy rows)', [0.125, 0.25, 0.5, 0.75, 1]],
} as const;

/** The states of the batch loop, each a series of batchgen_worker_state. */
export const STATES: readonly BatchState[] = ['idle', 'collecting', 'running', 'settling', 'draining', 'stopped'];

/** What the metrics read when scraped. */
export interface MetricSources {
  /** the worker's id (label of batchgen_worker_info) */
  worker: string;
  state(): BatchState;
  /** null before start */
  engine(): Engine | null;
  keysHeld(): number;
  keysCompileFailed(): number;
  keysRefused(): number;
  /** ms spent running batches */
  busyMs(): number;
  /** the queues of the held keys, read now */
  queues(): Promise<QueueStat[]>;
}

export type WorkerMetrics = { readonly [K in keyof typeof KEY_COUNTERS]: Counter<'key'> } & {
  readonly [K in keyof typeof KEY_HISTOGRAMS]: Histogram<'key'>;
} & {
  readonly registry: MetricsRegistry;
};

/** What one batch run was, for observeBatch. */
export interface BatchObservation {
  /** the batch size run (real and dummy rows) */
  B: number;
  /** real rows */
  rows: number;
  seconds: number;
  promptTokens: number;
  /** prompt bucket tokens of the real rows */
  bucketTokens: number;
  generatedTokens: number;
}

/** Counts one batch run of a key. */
export function observeBatch(m: WorkerMetrics, key: string, b: BatchObservation): void {
  const k = { key };
  m.batchSeconds.observe(k, b.seconds);
  m.batchFill.observe(k, b.rows / b.B);
  m.batches.inc(k);
  m.rows.inc(k, b.rows);
  m.dummyRows.inc(k, b.B - b.rows);
  m.promptTokens.inc(k, b.promptTokens);
  m.promptPaddedTokens.inc(k, b.bucketTokens);
  m.tokens.inc(k, b.generatedTokens);
}

function engineGauges(r: MetricsRegistry, src: MetricSources): void {
  const stats = () => src.engine()?.stats();
  r.counterFrom('batchgen_retraces_total', 'Compilations or new kernel shapes after warm-up (must stay 0)', () => stats()?.retraces ?? 0);
  r.counterFrom(
    'batchgen_pipelines_total',
    'Compute pipelines created (webgpu: WGSL compiled; 0 on other backends)',
    () => stats()?.pipelines ?? 0,
  );
  r.counterFrom(
    'batchgen_pipelines_after_warmup_total',
    'Compute pipelines created while a warmed variant ran (webgpu; counted in retraces too, must stay 0)',
    () => stats()?.pipelinesAfterWarmup ?? 0,
  );
  r.gauge(
    'batchgen_variant_compile_seconds',
    'Seconds the compile and warm-up of each cached variant took',
    () => Object.entries(stats()?.variantCompileSeconds ?? {}).map(([variant, value]) => ({ labels: { variant }, value })),
    ['variant'],
  );
  r.counterFrom('batchgen_variant_evictions_total', 'Variants evicted from the compile cache', () => stats()?.evictions ?? 0);
  r.counterFrom('batchgen_busy_seconds_total', 'Seconds spent processing batches', () => src.busyMs() / 1000);
  r.gauge('batchgen_variant_cache_bytes', 'Device bytes held by compiled variants (KV caches and workspace)', () => stats()?.bytes ?? 0);
  r.gauge('batchgen_tfjs_tensors', 'Live tfjs tensors (tf.memory().numTensors; 0 without tfjs)', () => stats()?.tensors ?? 0);
  r.gauge(
    'batchgen_tfjs_memory_bytes',
    'Bytes of live tfjs tensors (tf.memory().numBytes; 0 without tfjs)',
    () => stats()?.tensorBytes ?? 0,
  );
}

function workerGauges(r: MetricsRegistry, src: MetricSources): void {
  r.gauge('batchgen_keys_held', 'Compile keys this worker holds warm', src.keysHeld);
  r.gauge('batchgen_keys_compile_failed', 'Compile keys whose last compile failed on this worker', src.keysCompileFailed);
  r.gauge('batchgen_keys_refused', 'Compile keys with work this worker cannot hold (max keys or cache budget)', src.keysRefused);
  r.gauge(
    'batchgen_worker_state',
    'Batch loop state: 1 for the current state, 0 for the others',
    () => STATES.map((s) => ({ labels: { state: s }, value: s === src.state() ? 1 : 0 })),
    ['state'],
  );
  r.gauge(
    'batchgen_kernels_info',
    'Always 1; the labels name the matmul kernels (native oneDNN or stock tfjs) and their threads',
    () => {
      const e = src.engine();
      return [{ labels: { kernels: e?.kernels ?? 'none', threads: String(e?.threads ?? 1) }, value: 1 }];
    },
    ['kernels', 'threads'],
  );
  r.gauge(
    'batchgen_worker_info',
    'Always 1; the labels name the worker, its engine and tfjs backend',
    () => {
      const e = src.engine();
      return [{ labels: { worker: src.worker, engine: e?.kind ?? 'none', backend: e?.backend ?? 'none' }, value: 1 }];
    },
    ['worker', 'engine', 'backend'],
  );
  r.gauge(
    'batchgen_backend_info',
    'Always 1; the labels name the tfjs backend and what runs its kernels',
    () => {
      const e = src.engine();
      return [{ labels: { backend: e?.backend ?? 'none', kernel_provider: e?.kernelProvider ?? 'none' }, value: 1 }];
    },
    ['backend', 'kernel_provider'],
  );
}

/** Gauges of the held keys' queues: one Redis read per scrape, the last values kept when it fails. */
function queueGauges(r: MetricsRegistry, src: MetricSources): void {
  let last: QueueStat[] = [];
  let errors = 0;
  const read = shareInFlight(async () => {
    try {
      last = await src.queues();
    } catch {
      errors += 1;
    }
    return last;
  });
  r.counterFrom(
    'batchgen_queue_read_errors_total',
    'Scrapes whose read of the queue lengths failed or timed out (the queue gauges kept their last values)',
    async () => {
      await read();
      return errors;
    },
  );
  const table: [string, string, (q: QueueStat) => number][] = [
    ['batchgen_queue_waiting_jobs', 'Jobs waiting in the queue of a held key (all workers)', (q) => q.waiting],
    ['batchgen_queue_active_jobs', 'Jobs being run from the queue of a held key (all workers)', (q) => q.active],
    ['batchgen_queue_delayed_jobs', 'Retries waiting for their backoff in the queue of a held key', (q) => q.delayed],
    [
      'batchgen_queue_oldest_job_age_seconds',
      'Seconds since the next job to be taken from a held key was enqueued (0 when none waits)',
      (q) => q.oldestAgeSeconds,
    ],
  ];
  for (const [name, help, pick] of table)
    r.gauge(name, help, async () => (await read()).map((q) => ({ labels: { key: q.key }, value: pick(q) })), ['key']);
}

/**
 * A fresh registry with every worker metric. With `defaultMetrics`, prom-client's `process_*` and
 * `nodejs_*` metrics too (for a worker that has its process to itself).
 */
export function createWorkerMetrics(src: MetricSources, opts: { defaultMetrics?: boolean } = {}): WorkerMetrics {
  const registry = new MetricsRegistry();
  const counters = Object.fromEntries(
    Object.entries(KEY_COUNTERS).map(([k, [name, help]]) => [k, registry.counter(name, help, ['key'])]),
  ) as { [K in keyof typeof KEY_COUNTERS]: Counter<'key'> };
  const histograms = Object.fromEntries(
    Object.entries(KEY_HISTOGRAMS).map(([k, [name, help, buckets]]) => [k, registry.histogram(name, help, [...buckets], ['key'])]),
  ) as { [K in keyof typeof KEY_HISTOGRAMS]: Histogram<'key'> };
  engineGauges(registry, src);
  workerGauges(registry, src);
  queueGauges(registry, src);
  if (opts.defaultMetrics) registry.collectDefaults();
  return { ...counters, ...histograms, registry };
}
