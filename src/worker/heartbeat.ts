/**
 * A worker's heartbeat: a record in Redis (JSON under Keyspace.worker(id)) that expires unless it
 * is written again, read by other workers (which keys are held elsewhere), `batchgen status` and
 * `batchgen demo`.
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import type { Engine } from './engine.js';
import type { KeyHolder } from './key-holder.js';
import type { WorkerMetrics } from './metrics.js';
import type { RefusalReason } from './key-policy.js';
import type { BatchState } from './micro-batcher.js';

/** A worker's heartbeat record. */
export interface WorkerStats {
  id: string;
  pid: number;
  state: BatchState;
  engine?: string;
  backend?: string;
  /** what runs the backend's kernels (xnnpack, dawn (adapter), ...) */
  kernel_provider?: string;
  /** matmul kernels: native (oneDNN) or stock */
  kernels?: string;
  threads?: number;
  models: string[];
  keys: string[];
  /** keys whose last compile failed here (tried again after a while) */
  compile_failed: { key: string; error: string; at: number }[];
  /** keys with work that this worker cannot hold now */
  refused: { key: string; reason: RefusalReason }[];
  variants: number;
  batch_sizes: number[];
  compiles: number;
  retraces: number;
  /** compute pipelines created (webgpu), and those created after a warm-up (must stay 0) */
  pipelines: number;
  pipelines_after_warmup: number;
  evictions: number;
  jobs_completed: number;
  jobs_failed: number;
  jobs_retried: number;
  duplicates: number;
  isolated: number;
  batches: number;
  rows: number;
  dummy_rows: number;
  tokens: number;
  prompt_tokens: number;
  prompt_bucket_tokens: number;
  busy_ms: number;
  warm_ms: number;
  started_at: number;
  updated_at: number;
  /** started with --assigned: holds the keys the autoscaler assigns to its id */
  assigned: boolean;
  /** per key: seconds its last compile and warm-up of every batch size took here */
  compile_s: Record<string, number>;
  /** per cached variant: seconds its compile and warm-up took here */
  variant_compile_s: Record<string, number>;
  /** per key: what its batches here served, per second of busy time */
  service: Record<string, KeyService>;
  /** per held key: device bytes of its variants */
  key_bytes: Record<string, number>;
  /** device bytes the variants may take (the cache budget), and what the held ones take */
  budget_bytes: number;
  used_bytes: number;
  /** ms since its last batch ended (since it started when none yet); 0 while it collects or runs one */
  idle_ms: number;
}

/** One key's service on one worker. */
export interface KeyService {
  jobs: number;
  tokens: number;
  /** seconds spent processing its batches (run and settle) */
  busy_s: number;
  jobs_per_s: number;
  tokens_per_s: number;
}

/** Jobs, tokens and busy time per key, from the batches this worker ran. */
export class ServiceMeter {
  private readonly perKey = new Map<string, { jobs: number; tokens: number; ms: number }>();
  /** ms since the epoch the last batch ended (0: none yet) */
  lastBatchAt = 0;

  /** One processed batch of `key`: its jobs, tokens generated, and ms from taking to settling. */
  record(key: string, jobs: number, tokens: number, ms: number, endedAt = Date.now()): void {
    const s = this.perKey.get(key) ?? { jobs: 0, tokens: 0, ms: 0 };
    s.jobs += jobs;
    s.tokens += tokens;
    s.ms += ms;
    this.perKey.set(key, s);
    this.lastBatchAt = Math.max(this.lastBatchAt, endedAt);
  }

  /** Per key, rates per second of busy time (keys whose batches took no measurable time are left out). */
  report(): Record<string, KeyService> {
    const out: Record<string, KeyService> = {};
    for (const [key, s] of this.perKey) {
      if (s.ms <= 0) continue;
      const busy = s.ms / 1000;
      out[key] = { jobs: s.jobs, tokens: s.tokens, busy_s: busy, jobs_per_s: s.jobs / busy, tokens_per_s: s.tokens / busy };
    }
    return out;
  }
}

const BUSY_STATES: readonly BatchState[] = ['collecting', 'running', 'settling'];

/** ms since the worker last ran a batch (since it started, if never); 0 while busy. */
export function idleMs(state: BatchState, lastBatchAt: number, startedAt: number, now: number): number {
  if (BUSY_STATES.includes(state)) return 0;
  return Math.max(0, now - Math.max(lastBatchAt, startedAt));
}

/** What a worker's stats are made of. */
export interface StatsSources {
  id: string;
  state: BatchState;
  engine: Engine | null;
  models: string[];
  holder: KeyHolder | null;
  batchSizes: number[];
  metrics: WorkerMetrics;
  busyMs: number;
  warmMs: number;
  startedAt: number;
  assigned: boolean;
  service: ServiceMeter;
  budgetBytes: number;
}

/** The heartbeat record of a worker, now. */
export function workerStats(s: StatsSources): WorkerStats {
  const e = s.engine?.stats();
  const m = s.metrics;
  const now = Date.now();
  return {
    id: s.id,
    pid: process.pid,
    state: s.state,
    engine: s.engine?.kind,
    backend: s.engine?.backend,
    kernel_provider: s.engine?.kernelProvider,
    kernels: s.engine?.kernels,
    threads: s.engine?.threads,
    models: s.models,
    keys: s.holder?.ids() ?? [],
    ...(s.holder?.book.report() ?? { compile_failed: [], refused: [] }),
    variants: (s.holder?.size ?? 0) * s.batchSizes.length,
    batch_sizes: s.batchSizes,
    compiles: e?.compiles ?? 0,
    retraces: e?.retraces ?? 0,
    pipelines: e?.pipelines ?? 0,
    pipelines_after_warmup: e?.pipelinesAfterWarmup ?? 0,
    evictions: e?.evictions ?? 0,
    jobs_completed: m.jobsCompleted.total(),
    jobs_failed: m.jobsFailed.total(),
    jobs_retried: m.jobsRetried.total(),
    duplicates: m.duplicates.total(),
    isolated: m.isolated.total(),
    batches: m.batches.total(),
    rows: m.rows.total(),
    dummy_rows: m.dummyRows.total(),
    tokens: m.tokens.total(),
    prompt_tokens: m.promptTokens.total(),
    prompt_bucket_tokens: m.promptPaddedTokens.total(),
    busy_ms: s.busyMs,
    warm_ms: s.warmMs,
    started_at: s.startedAt,
    updated_at: now,
    assigned: s.assigned,
    compile_s: s.holder?.compileReport() ?? {},
    variant_compile_s: e?.variantCompileSeconds ?? {},
    service: s.service.report(),
    key_bytes: s.holder?.bytesReport() ?? {},
    budget_bytes: s.budgetBytes,
    used_bytes: e?.bytes ?? 0,
    idle_ms: idleMs(s.state, s.service.lastBatchAt, s.startedAt, now),
  };
}

/** Writes the heartbeat record now and then on a timer; a failing write is logged once per run of failures. */
export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;
  private failing = false;

  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly intervalMs: number,
    private readonly stats: () => WorkerStats,
    private readonly log: Logger,
  ) {}

  /** Writes the record, to expire after `ttlMs` (three intervals by default, at least a second). */
  async beat(ttlMs = this.intervalMs * 3): Promise<void> {
    await this.redis.set(this.key, JSON.stringify(this.stats()), 'PX', Math.max(ttlMs, 1000));
  }

  /** Writes the record every interval until stop(). */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer (the record stays until it expires). */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private async tick(): Promise<void> {
    try {
      await this.beat();
      if (this.failing) this.log.info('heartbeat written again');
      this.failing = false;
    } catch (e) {
      if (!this.failing)
        this.log.warn({ err: (e as Error).message }, 'could not write the heartbeat (other workers may think this one is gone)');
      this.failing = true;
    }
  }
}
