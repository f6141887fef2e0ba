/**
 * The worker's metrics, defined in one table each for counters and for gauges read when scraped,
 * on the registry of src/observability/metrics.ts.
 */
import { MetricsRegistry, type Counter, type Gauge, type Histogram } from '../observability/metrics.js';
import type { BatchState } from './micro-batcher.js';

/** Counters, by the name the worker uses: [Prometheus name, help]. */
const COUNTERS = {
  jobsCompleted: ['batchgen_jobs_completed_total', 'Jobs completed with a result'],
  jobsFailed: ['batchgen_jobs_failed_total', 'Jobs failed for good (error written)'],
  jobsRetried: ['batchgen_jobs_retried_total', 'Jobs failed and left to retry with backoff'],
  duplicates: ['batchgen_duplicate_deliveries_total', 'Results not written because the custom_id already had one'],
  batches: ['batchgen_batches_total', 'Batches run'],
  rows: ['batchgen_rows_total', 'Real rows run'],
  dummyRows: ['batchgen_dummy_rows_total', 'Masked dummy rows that padded batches to an allowed size'],
  tokens: ['batchgen_generated_tokens_total', 'Tokens generated for real rows'],
  promptTokens: ['batchgen_prompt_tokens_total', 'Real prompt tokens of real rows'],
  promptPaddedTokens: ['batchgen_prompt_bucket_tokens_total', 'Prompt bucket tokens of real rows (real + padding)'],
  isolated: ['batchgen_isolated_runs_total', 'Jobs run alone after their batch failed or after an earlier delivery'],
} as const;

const BATCH_SECONDS_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** The values of the worker_state gauge, in order. */
export const STATE_CODES: readonly BatchState[] = ['idle', 'collecting', 'running', 'settling', 'draining', 'stopped'];

/** What the gauges read when scraped. */
export interface GaugeSources {
  compiles(): number;
  retraces(): number;
  evictions(): number;
  keysHeld(): number;
  keysCompileFailed(): number;
  keysRefused(): number;
  /** ms spent running batches */
  busyMs(): number;
}

/** Gauges read when scraped: [Prometheus name, help, value]. */
function gaugeTable(src: GaugeSources, tokens: Counter): [string, string, () => number][] {
  return [
    ['batchgen_compiles', 'Variants compiled by this worker', src.compiles],
    ['batchgen_retraces', 'Compilations or new kernel shapes after warm-up (must stay 0)', src.retraces],
    ['batchgen_variant_evictions', 'Variants evicted from the compile cache', src.evictions],
    ['batchgen_keys_held', 'Compile keys this worker holds warm', src.keysHeld],
    ['batchgen_keys_compile_failed', 'Compile keys whose last compile failed on this worker', src.keysCompileFailed],
    ['batchgen_keys_refused', 'Compile keys with work this worker cannot hold (max keys or cache budget)', src.keysRefused],
    [
      'batchgen_tokens_per_second',
      'Generated tokens per second of busy time',
      () => (src.busyMs() > 0 ? (tokens.total() * 1000) / src.busyMs() : 0),
    ],
  ];
}

export type WorkerMetrics = { readonly [K in keyof typeof COUNTERS]: Counter } & {
  readonly registry: MetricsRegistry;
  readonly batchSeconds: Histogram;
  /** the loop's state, as its index in STATE_CODES */
  readonly state: Gauge;
};

/** A fresh registry with every worker metric. */
export function createWorkerMetrics(src: GaugeSources): WorkerMetrics {
  const registry = new MetricsRegistry();
  const counters = Object.fromEntries(Object.entries(COUNTERS).map(([k, [name, help]]) => [k, registry.counter(name, help)])) as {
    [K in keyof typeof COUNTERS]: Counter;
  };
  const batchSeconds = registry.histogram('batchgen_batch_seconds', 'Time to run one batch', BATCH_SECONDS_BUCKETS);
  const state = registry.gauge('batchgen_worker_state', `Batch loop state: ${STATE_CODES.map((s, i) => `${i} ${s}`).join(', ')}`);
  for (const [name, help, read] of gaugeTable(src, counters.tokens)) registry.gauge(name, help, read);
  return { ...counters, registry, batchSeconds, state };
}
