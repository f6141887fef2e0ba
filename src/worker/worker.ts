/**
 * A batchgen worker. It loads its models and compiles and warms every variant of the keys it holds
 * **before** taking any job of those keys (a compile never happens while a job's lock is running),
 * then loops: pick a queue with work (the registry says which keys have had work), collect a
 * micro-batch from it, run it on the smallest allowed batch size, write one result per custom_id,
 * complete the jobs. Locks of held jobs are renewed by a timer while the batch runs; the compiled
 * function yields to the event loop between decode steps so that timer runs.
 *
 * A payload read from Redis is parsed again and an invalid one fails at once, unretried. A job that
 * fails inside a batch is run again alone at once, so it cannot fail its neighbours; a job delivered
 * before (it failed, or stalled when a worker died) always runs alone. Transient failures retry with
 * BullMQ's backoff; a job stalled too often fails with its reason.
 */
import { hostname } from 'node:os';
import type { Server } from 'node:http';
import { Job, UnrecoverableError, Worker as BullWorker, type JobJson } from 'bullmq';
import type { Redis } from 'ioredis';
import type { RowResult } from '../compiler/types.js';
import { BatchStore } from '../shared/batch-store.js';
import { keyId, parseKeyId, type CompileKey } from '../shared/compile-key.js';
import { Keyspace, type KeyspaceOptions, type QueueRef } from '../shared/keys.js';
import type { ModelSpec } from '../shared/models.js';
import { connectRedis, redactUrl, redisUrlFrom } from '../shared/redis.js';
import type { JobPayload } from '../shared/schemas.js';
import { componentLogger, type Logger } from '../observability/logger.js';
import { MetricsRegistry, serveMetrics, type Counter, type Gauge, type Histogram } from '../observability/metrics.js';
import { createEngine, type Engine, type EngineModel, type EngineVariant } from './engine.js';
import { DEFAULT_BATCH_SIZES } from '../shared/batch-sizes.js';
import { chooseQueue, checkBatchSizes, collect, paddedBatchSize, planBatches, type BatchState, type QueueLoad } from './micro-batcher.js';
import { BAD_JSON_MARK, checkPayload } from './payload.js';
import { decideFailure, resultRecord } from './results.js';
import { readHeartbeats, isLive } from '../shared/heartbeats.js';
import { DEFAULT_REGISTRY_TTL_MS, hasWork, NO_WORK, prunableEntries, pruneRegistryEntry, queueWork, readRegistry, type QueueWork, type RegistryEntry } from '../shared/registry.js';
import { planKeys, type RefusalReason } from './key-policy.js';
import { KeyBook } from './key-book.js';

/**
 * Failures injected on purpose, for tests and drills only (from BATCHGEN_FAULTS, a JSON object).
 * Never set in production.
 */
export interface Faults {
  /** a batch holding one of these custom_ids throws */
  throwOn?: string[];
  /** a batch holding one of these custom_ids kills the process (SIGKILL) */
  killOn?: string[];
  /** extra time each variant's compile takes, blocking the event loop */
  compileDelayMs?: number;
  /** extra time each batch takes, yielding to the event loop */
  runDelayMs?: number;
  /** the compile of these key ids fails */
  compileFailOn?: string[];
}

export interface BatchWorkerOptions extends KeyspaceOptions {
  /** The models this worker serves. Required. */
  models: ModelSpec[];
  /** Default: REDIS_URL, else redis://127.0.0.1:6379. */
  redisUrl?: string;
  /** `compiler` (default), `noop`, or an engine object. */
  engine?: 'compiler' | 'noop' | Engine;
  /** Allowed batch sizes. Default [1, 2, 4, 8]. */
  batchSizes?: number[];
  /** How long to wait for more jobs after the first of a batch. Default 20 ms. */
  maxWaitMs?: number;
  /** Hold exactly these compile keys (`model:pP:nN:strategy`), warmed at start. Default: the keys of the registry that have work. */
  keys?: string[];
  /** The most keys held when they come from the registry (idle ones are released for a key with work). Default 32. */
  maxKeys?: number;
  /** A registry entry whose queue is empty and that no producer wrote for this long is removed. Default 1 hour. */
  registryTtlMs?: number;
  /** Lock duration of a taken job (renewed while its batch runs). Default 30000 ms. */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for. Default 30000 ms. */
  stalledIntervalMs?: number;
  /** A job stalled more than this many times fails. Default 1. */
  maxStalledCount?: number;
  /** How often the registry is read for new keys. Default 1000 ms. */
  registryRefreshMs?: number;
  /** Longest sleep when no queue has work. Default 200 ms. */
  idleMaxMs?: number;
  /** Heartbeat interval (a record in Redis that expires). Default 2000 ms. */
  heartbeatMs?: number;
  /** Worker id in logs, tokens and heartbeats. Default `<host>-<pid>`. */
  id?: string;
  /** Serve Prometheus metrics on this port. Default: none. */
  metricsPort?: number;
  /**
   * Device bytes (KV caches and workspace) of compiled variants: no more keys are held once it is
   * reached, unless idle keys are released (variants are never evicted while their key is held). Default 2 GiB.
   */
  cacheBudgetBytes?: number;
  /** Default: BATCHGEN_FAULTS, else none. */
  faults?: Faults;
  logger?: Logger;
}

/** A worker's heartbeat record (JSON in Redis under Keyspace.worker(id)). */
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

interface HeldKey {
  id: string;
  key: CompileKey;
  ref: QueueRef;
  model: EngineModel;
  variants: Map<number, EngineVariant>;
  bull: ManualWorker;
  /** device bytes of its variants */
  bytes: number;
  heldAt: number;
  lastServedAt: number;
  /** jobs believed to be waiting (from the last count): takes never ask for more, so no empty moveToActive calls */
  waitingHint: number;
  /** retries waiting for their backoff: one take may promote a due one */
  delayedHint: number;
  /** jobs handed back by completions of the previous batch (already locked): the next batch starts with them */
  prefetched: Taken[];
}

interface Taken {
  job: Job;
  token: string;
}

interface Ready extends Taken {
  payload: JobPayload;
}

/** BullMQ's worker, used without a processor; job data that is not JSON becomes a marked object. */
class ManualWorker extends BullWorker {
  /** The job that BullMQ handed back with a completion (`fetchNext`), locked with the same token. */
  async jobFromCompletion(raw: unknown, token: string): Promise<Job | undefined> {
    if (!Array.isArray(raw) || !raw[0]) return undefined;
    return this.nextJobFromJobData(raw[0] as JobJson, raw[1] as string, token);
  }

  protected override createJob(data: JobJson, jobId: string): Job {
    try {
      return super.createJob(data, jobId);
    } catch (e) {
      return super.createJob({ ...data, data: JSON.stringify({ [BAD_JSON_MARK]: (e as Error).message }) }, jobId);
    }
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** A key whose compile failed is tried again after this long. */
const KEY_RETRY_MS = 30_000;
/** How long a batch's status is trusted before it is read again (cancel latency). */
const STATUS_TTL_MS = 500;
/** Batches taken from one queue in a row before the queues are compared again. */
const MAX_RUN_OF_BATCHES = 4;

function faultsFromEnv(): Faults {
  const raw = process.env.BATCHGEN_FAULTS;
  if (!raw) return {};
  try {
    return JSON.parse(raw) as Faults;
  } catch {
    throw new Error(`BATCHGEN_FAULTS is not JSON: ${raw}`);
  }
}

interface WorkerMetrics {
  registry: MetricsRegistry;
  jobsCompleted: Counter;
  jobsFailed: Counter;
  jobsRetried: Counter;
  duplicates: Counter;
  batches: Counter;
  rows: Counter;
  dummyRows: Counter;
  tokens: Counter;
  promptTokens: Counter;
  promptPaddedTokens: Counter;
  isolated: Counter;
  batchSeconds: Histogram;
  state: Gauge;
}

export class BatchWorker {
  readonly id: string;
  readonly keys: Keyspace;
  private readonly opts: Required<Pick<BatchWorkerOptions, 'maxWaitMs' | 'maxKeys' | 'lockDurationMs' | 'stalledIntervalMs' | 'maxStalledCount' | 'registryRefreshMs' | 'idleMaxMs' | 'heartbeatMs'>> &
    BatchWorkerOptions;
  private readonly sizes: number[];
  private readonly budgetBytes: number;
  private readonly faults: Faults;
  private readonly log: Logger;
  private redis: Redis | null = null;
  private store: BatchStore | null = null;
  private engine: Engine | null = null;
  private readonly models = new Map<string, EngineModel>();
  private readonly held = new Map<string, HeldKey>();
  /** failed compiles and refusals */
  private readonly book = new KeyBook();
  private lastPruneAt = 0;
  private tokenSeq = 0;
  private readonly statusCache = new Map<string, { status: string | null; at: number }>();
  private _state: BatchState = 'idle';
  private stopping = false;
  private loopDone: Promise<void> | null = null;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private metricsServer: Server | null = null;
  private closing: Promise<void> | null = null;
  private readonly startedAt = Date.now();
  private warmMs = 0;
  private busyMs = 0;
  readonly metrics: WorkerMetrics;

  constructor(opts: BatchWorkerOptions) {
    if (!opts.models || opts.models.length === 0) throw new Error('a worker needs at least one model (--model NAME=DIR)');
    for (const [name, v] of Object.entries({
      maxWaitMs: opts.maxWaitMs,
      lockDurationMs: opts.lockDurationMs,
      stalledIntervalMs: opts.stalledIntervalMs,
      registryRefreshMs: opts.registryRefreshMs,
      idleMaxMs: opts.idleMaxMs,
      heartbeatMs: opts.heartbeatMs,
      registryTtlMs: opts.registryTtlMs,
    })) {
      if (v !== undefined && !(Number.isFinite(v) && v >= 0)) throw new Error(`${name} must be a number ≥ 0, got ${v}`);
    }
    if (opts.maxKeys !== undefined && !(Number.isInteger(opts.maxKeys) && opts.maxKeys >= 1)) throw new Error(`maxKeys must be a positive integer, got ${opts.maxKeys}`);
    if (opts.maxStalledCount !== undefined && !(Number.isInteger(opts.maxStalledCount) && opts.maxStalledCount >= 0)) {
      throw new Error(`maxStalledCount must be an integer ≥ 0, got ${opts.maxStalledCount}`);
    }
    this.opts = {
      maxWaitMs: 20,
      maxKeys: 32,
      lockDurationMs: 30_000,
      stalledIntervalMs: 30_000,
      maxStalledCount: 1,
      registryRefreshMs: 1000,
      idleMaxMs: 200,
      heartbeatMs: 2000,
      ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
    } as BatchWorker['opts'];
    this.sizes = checkBatchSizes(opts.batchSizes ?? [...DEFAULT_BATCH_SIZES]);
    if (opts.cacheBudgetBytes !== undefined && !(opts.cacheBudgetBytes > 0)) throw new Error(`cacheBudgetBytes must be positive, got ${opts.cacheBudgetBytes}`);
    this.budgetBytes = opts.cacheBudgetBytes ?? 2 * 1024 ** 3;
    this.id = opts.id ?? `${hostname()}-${process.pid}`;
    this.keys = new Keyspace(opts);
    this.faults = opts.faults ?? faultsFromEnv();
    this.log = opts.logger ?? componentLogger('worker', { worker: this.id });
    for (const k of opts.keys ?? []) parseKeyId(k);
    this.metrics = this.makeMetrics();
  }

  get state(): BatchState {
    return this._state;
  }

  private setState(s: BatchState): void {
    this._state = s;
    this.metrics.state.set(['idle', 'collecting', 'running', 'settling', 'draining', 'stopped'].indexOf(s));
  }

  private makeMetrics(): WorkerMetrics {
    const r = new MetricsRegistry();
    const m: WorkerMetrics = {
      registry: r,
      jobsCompleted: r.counter('batchgen_jobs_completed_total', 'Jobs completed with a result'),
      jobsFailed: r.counter('batchgen_jobs_failed_total', 'Jobs failed for good (error written)'),
      jobsRetried: r.counter('batchgen_jobs_retried_total', 'Jobs failed and left to retry with backoff'),
      duplicates: r.counter('batchgen_duplicate_deliveries_total', 'Results not written because the custom_id already had one'),
      batches: r.counter('batchgen_batches_total', 'Batches run'),
      rows: r.counter('batchgen_rows_total', 'Real rows run'),
      dummyRows: r.counter('batchgen_dummy_rows_total', 'Masked dummy rows that padded batches to an allowed size'),
      tokens: r.counter('batchgen_generated_tokens_total', 'Tokens generated for real rows'),
      promptTokens: r.counter('batchgen_prompt_tokens_total', 'Real prompt tokens of real rows'),
      promptPaddedTokens: r.counter('batchgen_prompt_bucket_tokens_total', 'Prompt bucket tokens of real rows (real + padding)'),
      isolated: r.counter('batchgen_isolated_runs_total', 'Jobs run alone after their batch failed or after an earlier delivery'),
      batchSeconds: r.histogram('batchgen_batch_seconds', 'Time to run one batch', [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]),
      state: r.gauge('batchgen_worker_state', 'Batch loop state: 0 idle, 1 collecting, 2 running, 3 settling, 4 draining, 5 stopped'),
    };
    r.gauge('batchgen_compiles', 'Variants compiled by this worker', () => this.engine?.stats().compiles ?? 0);
    r.gauge('batchgen_retraces', 'Compilations or new kernel shapes after warm-up (must stay 0)', () => this.engine?.stats().retraces ?? 0);
    r.gauge('batchgen_variant_evictions', 'Variants evicted from the compile cache', () => this.engine?.stats().evictions ?? 0);
    r.gauge('batchgen_keys_held', 'Compile keys this worker holds warm', () => this.held.size);
    r.gauge('batchgen_keys_compile_failed', 'Compile keys whose last compile failed on this worker', () => this.book.failedCount);
    r.gauge('batchgen_keys_refused', 'Compile keys with work this worker cannot hold (max keys or cache budget)', () => this.book.refusedCount);
    r.gauge('batchgen_tokens_per_second', 'Generated tokens per second of busy time', () => (this.busyMs > 0 ? (m.tokens.total() * 1000) / this.busyMs : 0));
    return m;
  }

  private starting: Promise<void> | null = null;

  /** Connects, loads models, warms the initial keys, then runs the loop in the background. */
  start(): Promise<void> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    const url = redisUrlFrom(this.opts.redisUrl);
    this.redis = await connectRedis({ url, role: 'worker', name: `batchgen-worker-${this.id}` });
    this.redis.on('error', (e) => this.log.warn({ err: e.message }, 'redis connection error'));
    this.store = new BatchStore(this.redis, this.keys);
    await this.checkEvictionPolicy();
    // no eviction in the engine: see refreshKeys
    this.engine = typeof this.opts.engine === 'object' ? this.opts.engine : await createEngine(this.opts.engine ?? 'compiler', { cacheBudgetBytes: Number.MAX_SAFE_INTEGER });
    if (this.opts.metricsPort !== undefined) {
      this.metricsServer = await serveMetrics(this.metrics.registry, this.opts.metricsPort, undefined, () => ({ worker: this.id, ...this.book.health() }));
      this.log.info({ port: this.opts.metricsPort }, 'metrics at /metrics');
    }
    for (const spec of this.opts.models) {
      const m = await this.engine.loadModel(spec);
      this.models.set(spec.name, m);
    }
    this.log.info(
      { redis: redactUrl(url), engine: this.engine.kind, backend: this.engine.backend, models: [...this.models.keys()], batchSizes: this.sizes, prefix: this.keys.prefix },
      'worker starting',
    );
    const t0 = Date.now();
    await this.refreshKeys();
    this.warmMs = Date.now() - t0;
    await this.heartbeat();
    this.heartbeatTimer = setInterval(() => void this.heartbeat().catch(() => {}), this.opts.heartbeatMs);
    this.heartbeatTimer.unref();
    if (this.stopping) return;
    this.log.info({ keys: [...this.held.keys()], warmMs: this.warmMs, compiles: this.engine.stats().compiles }, 'warm: taking jobs');
    this.loopDone = this.loop();
  }

  /** Resolves when the loop has ended (after stop()). */
  async done(): Promise<void> {
    await this.loopDone;
  }

  private async checkEvictionPolicy(): Promise<void> {
    try {
      const r = (await this.redis!.config('GET', 'maxmemory-policy')) as string[];
      const policy = r[1];
      if (policy !== 'noeviction') {
        this.log.warn({ policy }, `Redis maxmemory-policy is "${policy}", not "noeviction": under memory pressure Redis may evict queue keys and lose jobs`);
      }
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'could not read Redis maxmemory-policy (CONFIG GET refused?): make sure it is noeviction');
    }
  }

  /**
   * Holds, releases and prunes keys (compiles happen here, with no job held). Explicit keys are all
   * held (cache budget permitting). Otherwise the registry keys of this worker's models that have
   * work are held, oldest entry first; idle keys are released for a key with work that no one
   * holds (planKeys); refused keys and failed compiles are tried again later.
   */
  private async refreshKeys(): Promise<void> {
    const now = Date.now();
    const entries: RegistryEntry[] = this.opts.keys ? this.opts.keys.map((id) => ({ id, key: parseKeyId(id), updatedAt: 0 })) : await readRegistry(this.redis!, this.keys);
    const mine = entries.filter((e) => this.models.has(e.key.model));
    const work = await queueWork(this.redis!, this.keys, mine.map((e) => e.id));
    this.book.noteWork(work, now);
    const workOf = (id: string): QueueWork => work.get(id) ?? NO_WORK;
    const refused: { key: string; reason: RefusalReason; work: QueueWork }[] = [];
    let toHold: RegistryEntry[];
    if (this.opts.keys) {
      toHold = mine.filter((e) => !this.held.has(e.id) && this.book.canTry(e.id, now));
    } else {
      const candidates = mine.filter((e) => !this.held.has(e.id) && this.book.canTry(e.id, now)).sort((a, b) => a.updatedAt - b.updatedAt);
      const elsewhere = candidates.some((c) => hasWork(workOf(c.id))) ? await this.keysHeldElsewhere() : new Set<string>();
      const plan = planKeys({
        held: [...this.held.values()].map((h) => ({ id: h.id, lastServedAt: Math.max(h.lastServedAt, h.heldAt), bytes: h.bytes, work: workOf(h.id), inHand: h.prefetched.length })),
        candidates: candidates.map((c) => ({ id: c.id, work: workOf(c.id), heldElsewhere: elsewhere.has(c.id) })),
        maxKeys: this.opts.maxKeys,
        budgetBytes: this.budgetBytes,
      });
      for (const id of plan.release) await this.release(id, 'idle, released for a key with work');
      for (const r of plan.refused) refused.push({ key: r.id, reason: r.reason, work: workOf(r.id) });
      const byId = new Map(candidates.map((c) => [c.id, c]));
      toHold = plan.hold.map((id) => byId.get(id)!);
    }
    for (const e of toHold) {
      if (this.stopping) return;
      // the engine's cache never evicts (an evicted variant would have to compile again while jobs wait):
      // the budget is enforced here, by holding no more keys once it is reached
      if (this.engine!.stats().bytes >= this.budgetBytes) {
        refused.push({ key: e.id, reason: 'cache_budget', work: workOf(e.id) });
        continue;
      }
      try {
        await this.hold(e.id, e.key, this.models.get(e.key.model)!);
        this.book.compiled(e.id);
      } catch (err) {
        const msg = (err as Error).message;
        this.log.error({ key: e.id, err: msg, retryInMs: KEY_RETRY_MS }, 'cannot compile key: not holding it for now');
        this.book.compileFailed(e.id, msg, now, Date.now() + KEY_RETRY_MS, workOf(e.id));
      }
    }
    for (const id of this.book.setRefused(refused)) {
      const r = refused.find((x) => x.key === id)!;
      const why = r.reason === 'max_keys' ? 'maxKeys reached and no held key is idle' : 'the variants held fill the cache budget (raise --cache-mb, or serve it elsewhere)';
      this.log.warn({ key: id, maxKeys: this.opts.maxKeys, bytes: this.engine!.stats().bytes, budget: this.budgetBytes, waiting: r.work.waiting }, `not holding key: ${why}`);
    }
    if (!this.opts.keys) await this.pruneRegistry(entries, now).catch((e: Error) => this.log.warn({ err: e.message }, 'could not prune the registry'));
  }

  /** Keys held by other live workers (from their heartbeats). */
  private async keysHeldElsewhere(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const h of await readHeartbeats(this.redis!, this.keys)) if (h.id !== this.id && isLive(h)) for (const k of h.keys) out.add(k);
    return out;
  }

  /** Removes registry entries with no work not written for registryTtlMs (at most once a minute). */
  private async pruneRegistry(entries: RegistryEntry[], now: number): Promise<void> {
    const ttl = this.opts.registryTtlMs ?? DEFAULT_REGISTRY_TTL_MS;
    if (now - this.lastPruneAt < Math.min(ttl, 60_000)) return;
    this.lastPruneAt = now;
    const old = entries.filter((e) => e.updatedAt + ttl < now);
    if (old.length === 0) return;
    const work = await queueWork(this.redis!, this.keys, old.map((e) => e.id));
    for (const id of prunableEntries(old, work, now, ttl)) {
      if (await pruneRegistryEntry(this.redis!, this.keys, id, now - ttl)) this.log.info({ key: id, ttlMs: ttl }, 'registry entry removed: no work for a while');
    }
  }

  /** Gives a key up: its BullMQ worker is closed and its variants disposed (memory given back). */
  private async release(id: string, why: string): Promise<void> {
    const h = this.held.get(id);
    if (!h) return;
    this.held.delete(id);
    await h.bull.close().catch((e: Error) => this.log.warn({ key: id, err: e.message }, 'could not close the queue worker of a released key'));
    for (const B of h.variants.keys()) await this.engine!.release(h.key, B);
    this.log.info({ key: id, bytes: h.bytes, lastServedAt: h.lastServedAt }, `key released: ${why}`);
  }

  private async hold(id: string, key: CompileKey, model: EngineModel): Promise<void> {
    const log = this.log.child({ key: id });
    const t0 = Date.now();
    const bytes0 = this.engine!.stats().bytes;
    const variants = new Map<number, EngineVariant>();
    try {
      if (this.faults.compileFailOn?.includes(id)) throw new Error('fault injection: this key does not compile');
      for (const B of this.sizes) {
        variants.set(B, await this.engine!.compile(model, key, B));
        if (this.faults.compileDelayMs) {
          const until = Date.now() + this.faults.compileDelayMs;
          while (Date.now() < until) {
            // blocks the event loop, as a long synchronous compile would
          }
        }
      }
    } catch (e) {
      for (const B of variants.keys()) await this.engine!.release(key, B).catch(() => {});
      throw e;
    }
    const ref = this.keys.queue(key);
    const bull = new ManualWorker(ref.bullName, null, {
      connection: this.redis!,
      prefix: ref.bullPrefix,
      autorun: false,
      name: this.id,
      lockDuration: this.opts.lockDurationMs,
      stalledInterval: this.opts.stalledIntervalMs,
      maxStalledCount: this.opts.maxStalledCount,
    });
    bull.on('error', (e) => log.warn({ err: e.message }, 'queue error'));
    await bull.waitUntilReady();
    void bull.startStalledCheckTimer();
    const bytes = this.engine!.stats().bytes - bytes0;
    this.held.set(id, { id, key, ref, model, variants, bull, bytes, heldAt: Date.now(), lastServedAt: 0, waitingHint: 0, delayedHint: 0, prefetched: [] });
    log.info({ batchSizes: this.sizes, ms: Date.now() - t0, bytes }, 'key warm');
  }

  private async loop(): Promise<void> {
    let idle = 5;
    let lastRefresh = Date.now();
    let errors = 0;
    while (!this.stopping) {
      try {
        if (Date.now() - lastRefresh >= this.opts.registryRefreshMs) {
          lastRefresh = Date.now();
          await this.refreshKeys();
          if (this.stopping) break;
        }
        const bMax = this.sizes[this.sizes.length - 1];
        const pick = chooseQueue(await this.loads(), bMax);
        let worked = false;
        if (pick) {
          const held = this.held.get(pick.id)!;
          held.lastServedAt = Date.now();
          // a queue that fills whole batches is served a few batches in a row before the queues are compared again
          // completing a batch fetches the first jobs of the next one (as BullMQ's own workers do), except the last of the run
          for (let run = 0; run < MAX_RUN_OF_BATCHES && !this.stopping; run++) {
            this.setState('collecting');
            const taken = await collect({ take: (n) => this.take(held, n) }, bMax, { maxWaitMs: this.opts.maxWaitMs, pollMs: 2 });
            if (taken.length > 0) {
              worked = true;
              await this.process(held, taken, run < MAX_RUN_OF_BATCHES - 1);
            }
            if (taken.length < bMax && held.prefetched.length === 0) break;
          }
          // jobs already taken are finished, stopping or not
          while (held.prefetched.length > 0) await this.process(held, held.prefetched.splice(0, bMax), false);
        }
        this.setState(this.stopping ? 'draining' : 'idle');
        errors = 0;
        if (worked) idle = 5;
        else {
          await sleep(idle);
          idle = Math.min(idle * 2, this.opts.idleMaxMs);
        }
      } catch (e) {
        errors += 1;
        this.setState('idle');
        this.log.error({ err: (e as Error).message }, 'worker loop error');
        await sleep(Math.min(100 * 2 ** Math.min(errors, 5), 5000));
      }
    }
  }

  /** Waiting and delayed counts of every held queue, in one round trip. */
  private async loads(): Promise<QueueLoad[]> {
    const list = [...this.held.values()];
    if (list.length === 0) return [];
    const p = this.redis!.pipeline();
    for (const h of list) p.llen(h.ref.waitList).zcard(h.ref.delayedSet);
    const out = (await p.exec()) ?? [];
    return list.map((h, i) => {
      h.waitingHint = Number(out[2 * i]?.[1] ?? 0);
      h.delayedHint = Number(out[2 * i + 1]?.[1] ?? 0);
      return { id: h.id, waiting: h.waitingHint, delayed: h.delayedHint, lastServedAt: h.lastServedAt };
    });
  }

  /**
   * Takes up to n jobs from a held queue without blocking. It asks for no more jobs than are
   * waiting (an empty take still costs Redis a script call), and for one when only delayed retries
   * are there (a take promotes those that are due).
   */
  private async take(held: HeldKey, n: number): Promise<Taken[]> {
    if (held.prefetched.length > 0) return held.prefetched.splice(0, n);
    if (this.stopping) return [];
    if (held.waitingHint <= 0) held.waitingHint = await this.redis!.llen(held.ref.waitList);
    let k = Math.min(n, held.waitingHint);
    if (k <= 0) {
      if (held.delayedHint <= 0) return [];
      k = 1;
      held.delayedHint = 0;
    }
    held.waitingHint -= k;
    const tokens = Array.from({ length: k }, () => `${this.id}:${++this.tokenSeq}`);
    const jobs = await Promise.all(tokens.map((t) => held.bull.getNextJob(t, { block: false })));
    const out: Taken[] = [];
    jobs.forEach((job, i) => {
      if (job) out.push({ job, token: tokens[i] });
    });
    return out;
  }

  /** Runs what was collected: checks, cancels, batches, settles. `prefetch`: completions may fetch the next jobs. */
  private async process(held: HeldKey, taken: Taken[], prefetch: boolean): Promise<void> {
    const live = new Set<Taken>(taken);
    const renew = setInterval(() => {
      const list = [...live];
      if (list.length === 0) return;
      held.bull
        .extendJobLocks(
          list.map((t) => t.job.id!),
          list.map((t) => t.token),
          this.opts.lockDurationMs,
        )
        .then((failed) => {
          if (Array.isArray(failed) && failed.length) this.log.warn({ key: held.id, jobs: failed }, 'lock renewal failed (another worker may take these jobs)');
        })
        .catch((e: Error) => this.log.warn({ key: held.id, err: e.message }, 'lock renewal error'));
    }, Math.max(50, Math.floor(this.opts.lockDurationMs / 3)));
    const t0 = Date.now();
    try {
      this.setState('running');
      const ready: Ready[] = [];
      for (const t of taken) {
        if (t.job.deferredFailure) {
          await this.settleFailure(held, t, null, new Error(`${t.job.deferredFailure} (a worker holding it stopped or died ${t.job.stalledCounter} times)`), true);
          live.delete(t);
          continue;
        }
        const chk = checkPayload(t.job.id, t.job.data, { key: held.key, contextLength: held.model.contextLength, vocabSize: held.model.vocabSize });
        if (!chk.ok) {
          this.log.warn({ key: held.id, job: t.job.id, reason: chk.reason }, 'invalid payload: failed without retry');
          await this.failInvalid(t, chk.reason, chk.batchId, chk.customId, chk.line);
          live.delete(t);
          continue;
        }
        ready.push({ ...t, payload: chk.payload });
      }
      const runnable = await this.dropCancelled(ready, live);
      const groups = planBatches(runnable, (r) => r.job.attemptsStarted, this.sizes[this.sizes.length - 1]);
      for (const g of groups) {
        if (g.length === 1 && g[0].job.attemptsStarted > 1) this.metrics.isolated.inc();
        await this.runGroup(held, g, live, prefetch && g === groups[groups.length - 1]);
      }
    } finally {
      clearInterval(renew);
      this.busyMs += Date.now() - t0;
    }
  }

  /**
   * Jobs of batches being cancelled are completed without running, and counted as cancelled.
   * Batch statuses are cached for STATUS_TTL_MS: a cancel reaches running workers within that time.
   */
  private async dropCancelled(ready: Ready[], live: Set<Taken>): Promise<Ready[]> {
    const now = Date.now();
    const ids = [...new Set(ready.map((r) => r.payload.batch_id))];
    const stale = ids.filter((id) => (this.statusCache.get(id)?.at ?? 0) + STATUS_TTL_MS < now);
    if (stale.length) {
      const st = await this.store!.statuses(stale);
      stale.forEach((id, i) => this.statusCache.set(id, { status: st[i], at: now }));
      if (this.statusCache.size > 10_000) for (const [id, v] of this.statusCache) if (v.at + STATUS_TTL_MS < now) this.statusCache.delete(id);
    }
    const cancelled = new Set(ids.filter((id) => ['cancelling', 'cancelled'].includes(this.statusCache.get(id)?.status ?? '')));
    if (cancelled.size === 0) return ready;
    const keep: Ready[] = [];
    for (const r of ready) {
      if (!cancelled.has(r.payload.batch_id)) {
        keep.push(r);
        continue;
      }
      await this.store!.markCancelled(r.payload.batch_id, [r.payload.custom_id]);
      await r.job.moveToCompleted(null, r.token, false).catch((e: Error) => this.log.warn({ job: r.job.id, err: e.message }, 'could not complete a cancelled job'));
      live.delete(r);
    }
    return keep;
  }

  private async runRows(held: HeldKey, group: Ready[]): Promise<RowResult[]> {
    const B = paddedBatchSize(group.length, this.sizes);
    const variant = held.variants.get(B)!;
    const cids = group.map((g) => g.payload.custom_id);
    this.log.info({ key: held.id, rows: group.length, B, jobs: group.map((g) => g.job.id) }, 'batch started');
    if (this.faults.killOn?.some((c) => cids.includes(c))) {
      this.log.warn({ key: held.id }, 'fault injection: killing the process mid-batch');
      process.kill(process.pid, 'SIGKILL');
      await sleep(10_000);
    }
    if (this.faults.runDelayMs) {
      const until = Date.now() + this.faults.runDelayMs;
      while (Date.now() < until) await sleep(Math.min(50, until - Date.now()));
    }
    if (this.faults.throwOn?.some((c) => cids.includes(c))) throw new Error('fault injection: this batch fails');
    const t0 = performance.now();
    const out = await variant.run(group.map((g) => ({ promptIds: g.payload.prompt_ids, params: g.payload.params })));
    const secs = (performance.now() - t0) / 1000;
    this.metrics.batchSeconds.observe(secs);
    this.metrics.batches.inc();
    this.metrics.rows.inc(group.length);
    this.metrics.dummyRows.inc(B - group.length);
    for (const g of group) {
      this.metrics.promptTokens.inc(g.payload.prompt_ids.length);
      this.metrics.promptPaddedTokens.inc(held.key.P);
    }
    this.metrics.tokens.inc(out.reduce((s, r) => s + r.tokenIds.length, 0));
    return out;
  }

  /** Runs a group; if it fails with several jobs, each runs again alone so one bad job cannot fail the others. */
  private async runGroup(held: HeldKey, group: Ready[], live: Set<Taken>, prefetch = false): Promise<void> {
    let out: RowResult[];
    try {
      this.setState('running');
      out = await this.runRows(held, group);
    } catch (e) {
      if (group.length > 1) {
        this.log.warn({ key: held.id, rows: group.length, err: (e as Error).message }, 'batch failed: running its jobs one by one');
        for (const g of group) {
          this.metrics.isolated.inc();
          await this.runGroup(held, [g], live);
        }
        return;
      }
      this.setState('settling');
      await this.settleFailure(held, group[0], group[0].payload, e, false);
      live.delete(group[0]);
      return;
    }
    this.setState('settling');
    await this.settleSuccess(held, group, out, prefetch);
    for (const g of group) live.delete(g);
  }

  /**
   * Writes the results of a group (one script call per batch run), then completes its jobs. With
   * `prefetch` (and no stop asked), each completion also takes the next waiting job, if any.
   */
  private async settleSuccess(held: HeldKey, group: Ready[], out: RowResult[], prefetch: boolean): Promise<void> {
    const recs = await Promise.all(group.map((r, i) => resultRecord(r.payload, out[i], held.model.decode, { worker: this.id, deliveries: r.job.attemptsStarted })));
    const byBatch = new Map<string, number[]>();
    group.forEach((r, i) => {
      const list = byBatch.get(r.payload.batch_id) ?? [];
      list.push(i);
      byBatch.set(r.payload.batch_id, list);
    });
    await Promise.all(
      [...byBatch].map(async ([batchId, idx]) => {
        const codes = await this.store!.writeResults(
          batchId,
          idx.map((i) => recs[i]),
        );
        codes.forEach((w, j) => {
          const job = group[idx[j]].job;
          if (w === 0) {
            this.metrics.duplicates.inc();
            this.log.info({ job: job.id }, 'second delivery: result already written, not written again');
          } else if (w < 0) {
            this.log.warn({ job: job.id, batch: batchId }, 'result for an unknown batch or custom_id (expired, or never submitted): not stored');
          }
        });
      }),
    );
    this.metrics.jobsCompleted.inc(group.length);
    const fetchNext = prefetch && !this.stopping;
    const wanted = fetchNext ? Math.min(group.length, Math.max(0, held.waitingHint)) : 0;
    await Promise.all(
      group.map(async (r, i) => {
        try {
          const next = await r.job.moveToCompleted(null, r.token, i < wanted);
          if (i < wanted) {
            const job = await held.bull.jobFromCompletion(next, r.token);
            if (job) held.prefetched.push({ job, token: r.token });
          }
        } catch (e) {
          this.log.warn({ job: r.job.id, err: (e as Error).message }, 'could not complete job (lock lost?); its result is stored once');
        }
      }),
    );
    held.waitingHint -= wanted;
  }

  /** A failed job: retried with backoff while attempts remain and the error is not permanent; else its error is written. */
  private async settleFailure(held: HeldKey, t: Taken, payload: JobPayload | null, err: unknown, forceFinal: boolean): Promise<void> {
    const d = decideFailure(err, t.job.attemptsMade, t.job.opts.attempts ?? 1);
    const final = forceFinal || d.final;
    let batchId = payload?.batch_id ?? null;
    let customId = payload?.custom_id ?? null;
    if (!payload && t.job.id) {
      const i = t.job.id.indexOf('/');
      if (i > 0) {
        batchId = t.job.id.slice(0, i);
        customId = t.job.id.slice(i + 1).replace(/%3A/g, ':').replace(/%25/g, '%');
      }
    }
    const line = payload?.line ?? (typeof (t.job.data as { line?: unknown })?.line === 'number' ? ((t.job.data as { line: number }).line) : null);
    if (final) {
      if (batchId && customId) {
        await this.writeErrorSafe(batchId, customId, line, d.code, d.message);
      }
      this.metrics.jobsFailed.inc();
      this.log.warn({ key: held.id, job: t.job.id, code: d.code, err: d.message }, 'job failed');
      await t.job.moveToFailed(new UnrecoverableError(d.message), t.token, false).catch((e: Error) => this.log.warn({ job: t.job.id, err: e.message }, 'could not fail job'));
    } else {
      this.metrics.jobsRetried.inc();
      this.log.warn({ key: held.id, job: t.job.id, code: d.code, err: d.message, attempt: t.job.attemptsMade + 1 }, 'job failed: retrying with backoff');
      await t.job.moveToFailed(err instanceof Error ? err : new Error(String(err)), t.token, false).catch((e: Error) => this.log.warn({ job: t.job.id, err: e.message }, 'could not fail job'));
    }
  }

  private async failInvalid(t: Taken, reason: string, batchId: string | null, customId: string | null, line: number | null): Promise<void> {
    if (batchId && customId) await this.writeErrorSafe(batchId, customId, line, 'invalid_payload', reason);
    this.metrics.jobsFailed.inc();
    await t.job.moveToFailed(new UnrecoverableError(`invalid payload: ${reason}`), t.token, false).catch((e: Error) => this.log.warn({ job: t.job.id, err: e.message }, 'could not fail job'));
  }

  private async writeErrorSafe(batchId: string, customId: string, line: number | null, code: string, message: string): Promise<void> {
    try {
      await this.store!.writeError(batchId, { line, custom_id: customId, error: { code, message } });
    } catch (e) {
      this.log.warn({ batch: batchId, err: (e as Error).message }, 'could not record the error in its batch');
    }
  }

  /** What this worker reports about itself (heartbeat, demo summary). */
  stats(): WorkerStats {
    const e = this.engine?.stats();
    return {
      id: this.id,
      pid: process.pid,
      state: this._state,
      engine: this.engine?.kind,
      backend: this.engine?.backend,
      models: [...this.models.keys()],
      keys: [...this.held.keys()],
      ...this.book.report(),
      variants: this.held.size * this.sizes.length,
      batch_sizes: this.sizes,
      compiles: e?.compiles ?? 0,
      retraces: e?.retraces ?? 0,
      evictions: e?.evictions ?? 0,
      jobs_completed: this.metrics.jobsCompleted.total(),
      jobs_failed: this.metrics.jobsFailed.total(),
      jobs_retried: this.metrics.jobsRetried.total(),
      duplicates: this.metrics.duplicates.total(),
      isolated: this.metrics.isolated.total(),
      batches: this.metrics.batches.total(),
      rows: this.metrics.rows.total(),
      dummy_rows: this.metrics.dummyRows.total(),
      tokens: this.metrics.tokens.total(),
      prompt_tokens: this.metrics.promptTokens.total(),
      prompt_bucket_tokens: this.metrics.promptPaddedTokens.total(),
      busy_ms: this.busyMs,
      warm_ms: this.warmMs,
      started_at: this.startedAt,
      updated_at: Date.now(),
    };
  }

  private async heartbeat(ttlMs = this.opts.heartbeatMs * 3): Promise<void> {
    if (!this.redis) return;
    await this.redis.set(this.keys.worker(this.id), JSON.stringify(this.stats()), 'PX', Math.max(ttlMs, 1000));
  }

  /** Stops taking jobs, finishes the batch in hand, closes everything. Safe to call twice. */
  stop(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true;
      if (this._state === 'idle') this.setState('draining');
      await this.starting?.catch(() => {});
      await this.loopDone?.catch(() => {});
      this.setState('stopped');
      if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
      // the last heartbeat stays a minute, for summaries
      await this.heartbeat(60_000).catch(() => {});
      for (const h of this.held.values()) await h.bull.close().catch(() => {});
      this.held.clear();
      if (this.metricsServer) await new Promise<void>((r) => this.metricsServer!.close(() => r()));
      await this.engine?.dispose().catch(() => {});
      this.redis?.disconnect();
      this.log.info(
        { jobs: this.metrics.jobsCompleted.total(), failed: this.metrics.jobsFailed.total(), batches: this.metrics.batches.total(), compiles: this.engine?.stats().compiles, retraces: this.engine?.stats().retraces },
        'worker stopped',
      );
    })();
    return this.closing;
  }
}

export { keyId };
