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
}

/** The heartbeat record of a worker, now. */
export function workerStats(s: StatsSources): WorkerStats {
  const e = s.engine?.stats();
  const m = s.metrics;
  return {
    id: s.id,
    pid: process.pid,
    state: s.state,
    engine: s.engine?.kind,
    backend: s.engine?.backend,
    models: s.models,
    keys: s.holder?.ids() ?? [],
    ...(s.holder?.book.report() ?? { compile_failed: [], refused: [] }),
    variants: (s.holder?.size ?? 0) * s.batchSizes.length,
    batch_sizes: s.batchSizes,
    compiles: e?.compiles ?? 0,
    retraces: e?.retraces ?? 0,
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
    updated_at: Date.now(),
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
