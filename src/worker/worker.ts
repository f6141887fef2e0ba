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
 *
 * The parts: options.ts (options, defaults), key-holder.ts (which keys are held, compiles),
 * held-queue.ts (one key's queue), lock-renewer.ts (locks of the jobs in hand), batch-runner.ts
 * (running a group), settler.ts (results, failures, cancels), watchdog.ts (Redis silent, fetching
 * stopped), eviction-check.ts, stop-steps.ts (the bounded stop), faults.ts (injected failures),
 * heartbeat.ts, metrics.ts. This file keeps start, the loop, processing a collected batch, and stop.
 */
import type { Server } from 'node:http';
import type { Redis } from 'ioredis';
import type { RowResult } from '../compiler/types.js';
import { Keyspace } from '../shared/keys.js';
import { connectRedis, redactUrl, redisUrlFrom } from '../shared/redis.js';
import { isOutOfMemory, Outage, watchConnection } from '../shared/outage.js';
import { componentLogger, type Logger } from '../observability/logger.js';
import { serveMetrics } from '../observability/metrics.js';
import { runBatch } from './batch-runner.js';
import { buildParts, type Parts } from './parts.js';
import { createEngine, type Engine, type EngineModel } from './engine.js';
import { checkEvictionPolicy } from './eviction-check.js';
import { Heartbeat, ServiceMeter, workerStats, type WorkerStats } from './heartbeat.js';
import { HeldQueue, type Ready, type Taken } from './held-queue.js';
import { invariant } from './invariant.js';
import { loopHealth, withLoopHealth, type LoopErrors, type WorkerHealth } from './key-policy.js';
import { LockRenewer } from './lock-renewer.js';
import { meteredEngine } from './metered-engine.js';
import { createWorkerMetrics, type WorkerMetrics } from './metrics.js';
import { chooseQueue, collect, planBatches, type BatchState } from './micro-batcher.js';
import { resolveOptions, type BatchWorkerOptions, type ResolvedOptions } from './options.js';
import { readQueueStats } from './queue-stats.js';
import { stopBudget } from './shutdown.js';
import { runSteps, settledBefore } from './stop-steps.js';
import { Watchdog, type WatchdogHealth } from './watchdog.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Batches taken from one queue in a row before the queues are compared again. */
const MAX_RUN_OF_BATCHES = 4;
/** First idle sleep of the loop, doubled up to idleMaxMs while no queue has work. */
const IDLE_MIN_MS = 5;

/** A worker process's batch loop over the queues of the compile keys it holds. */
export class BatchWorker {
  readonly id: string;
  readonly keys: Keyspace;
  readonly metrics: WorkerMetrics;
  private readonly opts: ResolvedOptions;
  private readonly log: Logger;
  private readonly models = new Map<string, EngineModel>();
  private redis: Redis | null = null;
  private engine: Engine | null = null;
  private parts: Parts | null = null;
  private heartbeat: Heartbeat | null = null;
  private metricsServer: Server | null = null;
  /** the lock renewer of the batch being processed: its jobs are the ones in hand */
  private inHand: LockRenewer | null = null;
  private tokenSeq = 0;
  private _state: BatchState = 'idle';
  private stopping = false;
  private loopErrors: LoopErrors = { consecutive: 0, last: null };
  private starting: Promise<void> | null = null;
  private loopDone: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  private readonly startedAt = Date.now();
  private warmMs = 0;
  private busyMs = 0;
  private readonly service = new ServiceMeter();
  private watchdog: Watchdog | null = null;
  /** the main connection's outages (logged once each) */
  private connection: ReturnType<typeof watchConnection> | null = null;
  /** Redis refusing writes for lack of memory (logged once, in /healthz) */
  private readonly oom = new Outage();

  constructor(opts: BatchWorkerOptions) {
    this.opts = resolveOptions(opts);
    this.id = this.opts.id;
    this.keys = new Keyspace(opts);
    this.log = this.opts.logger ?? componentLogger('worker', { worker: this.id });
    this.metrics = createWorkerMetrics(
      {
        worker: this.id,
        state: () => this._state,
        engine: () => this.engine,
        keysHeld: () => this.parts?.holder.size ?? 0,
        keysCompileFailed: () => this.parts?.holder.book.failedCount ?? 0,
        keysRefused: () => this.parts?.holder.book.refusedCount ?? 0,
        busyMs: () => this.busyMs,
        queues: async () => (this.parts ? readQueueStats(this.parts.redis, this.parts.holder.queues()) : []),
      },
      // a worker serving metrics has its process to itself: add prom-client's process_* and nodejs_*
      { defaultMetrics: this.opts.metricsPort !== undefined },
    );
  }

  get state(): BatchState {
    return this._state;
  }

  private setState(s: BatchState): void {
    this._state = s;
  }

  /** Connects, loads models, warms the initial keys, then runs the loop in the background. */
  start(): Promise<void> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<void> {
    const opts = this.opts;
    const url = redisUrlFrom(opts.redisUrl);
    const redis = await connectRedis({ url, role: 'worker', name: `batchgen-worker-${this.id}` });
    this.redis = redis;
    this.connection = watchConnection(redis, this.log, redactUrl(url));
    this.watchdog = new Watchdog(redis, opts.watchdogMs);
    this.watchdog.start();
    this.heartbeat = new Heartbeat(redis, this.keys.worker(this.id), opts.heartbeatMs, () => this.stats(), this.log);
    await checkEvictionPolicy(redis, this.opts.allowEviction, this.log);
    // the engine never evicts a held variant (it would compile again while jobs wait): the key holder
    // enforces the budget by holding no more keys once it is reached
    const made = { cacheBudgetBytes: Infinity, threads: opts.threads };
    const engine = meteredEngine(typeof opts.engine === 'object' ? opts.engine : await createEngine(opts.engine, made), this.metrics);
    this.engine = engine;
    const parts = buildParts(redis, engine, this.keys, {
      workerId: this.id,
      models: this.models,
      opts,
      metrics: this.metrics,
      log: this.log,
      stopping: () => this.stopping,
      jobsInHand: () => this.jobsInHand(),
      nextToken: () => `${this.id}:${++this.tokenSeq}`,
    });
    const { holder } = parts;
    this.parts = parts;
    if (opts.metricsPort !== undefined) {
      this.metricsServer = await serveMetrics(this.metrics.registry, opts.metricsPort, undefined, () => ({
        worker: this.id,
        ...this.health(),
      }));
      this.log.info({ port: opts.metricsPort }, 'metrics at /metrics');
    }
    for (const spec of opts.models) this.models.set(spec.name, await engine.loadModel(spec));
    this.log.info(
      {
        redis: redactUrl(url),
        engine: engine.kind,
        backend: engine.backend,
        kernels: { name: engine.kernels, threads: engine.threads, reason: engine.kernelsReason || undefined },
        models: [...this.models.keys()],
        batchSizes: opts.batchSizes,
        prefix: this.keys.prefix,
      },
      'worker starting',
    );
    const t0 = Date.now();
    await holder.refresh();
    this.warmMs = Date.now() - t0;
    await this.heartbeat.beat();
    this.heartbeat.start();
    if (this.stopping) return;
    this.log.info({ keys: holder.ids(), warmMs: this.warmMs, compiles: engine.stats().compiles }, 'warm: taking jobs');
    this.loopDone = this.loop(this.parts);
  }

  /** Resolves when the loop has ended (after stop()). */
  async done(): Promise<void> {
    await this.loopDone;
  }

  /** What /healthz says: the keys' problems, a loop that keeps failing, and the watchdog (Redis silent or full, fetching stopped). */
  health(): WorkerHealth & { watchdog?: WatchdogHealth } {
    const keys = this.parts?.holder.book.health() ?? { ok: true, problems: [] };
    const h = withLoopHealth(keys, loopHealth(this.loopErrors, this.opts.unhealthyAfterLoopErrors));
    const w = this.watchdog?.verdict(this._state === 'running', this.oom.downSince) ?? { ok: true };
    return w.ok ? h : { ...h, ok: false, watchdog: w };
  }

  /** Jobs taken and not settled: those of the batch being processed, and those prefetched. */
  private jobsInHand(): number {
    return (this.inHand?.size ?? 0) + (this.parts?.holder.prefetchedCount() ?? 0);
  }

  /**
   * The loop. Between passes (invariant): the state is `idle` or `draining` and no job is in hand;
   * keys are refreshed (and compiled) only there. An iteration that throws is counted: after
   * `unhealthyAfterLoopErrors` in a row, /healthz answers 503.
   */
  private async loop(p: Parts): Promise<void> {
    let idleMs = IDLE_MIN_MS;
    let lastRefresh = Date.now();
    while (!this.stopping) {
      try {
        invariant(
          this._state === 'idle' || this._state === 'draining',
          `between batches the state is idle or draining, not ${this._state}`,
        );
        if (Date.now() - lastRefresh >= this.opts.registryRefreshMs) {
          lastRefresh = Date.now();
          await p.holder.refresh();
          if (this.stopping) break;
        }
        const worked = await this.servePass(p);
        this.setState(this.stopping ? 'draining' : 'idle');
        this.loopErrors = { consecutive: 0, last: null };
        if (worked) this.noteWritesBack();
        if (worked) idleMs = IDLE_MIN_MS;
        else {
          await sleep(idleMs);
          idleMs = Math.min(idleMs * 2, this.opts.idleMaxMs);
        }
      } catch (e) {
        const msg = (e as Error).message;
        this.loopErrors = { consecutive: this.loopErrors.consecutive + 1, last: msg };
        this.setState('idle');
        this.abandonPrefetched(p);
        if (isOutOfMemory(e)) {
          if (this.oom.begin(Date.now(), msg))
            this.log.error(
              { err: msg },
              'Redis is out of memory (maxmemory reached, noeviction refuses writes): results cannot be written; retrying with backoff until memory is freed or maxmemory raised (logged once)',
            );
        } else this.log.error({ err: msg, consecutive: this.loopErrors.consecutive }, 'worker loop error');
        await sleep(Math.min(100 * 2 ** Math.min(this.loopErrors.consecutive, 5), 5000));
      }
    }
  }

  /** A pass that took jobs ended without an error: writes go through again. */
  private noteWritesBack(): void {
    const ms = this.oom.end(Date.now());
    if (ms !== null) this.log.info({ downMs: ms }, 'Redis accepts writes again');
  }

  /**
   * One pass: picks the queue to serve, then runs batches from it. A queue that fills whole batches
   * is served a few batches in a row before the queues are compared again; completing a batch
   * fetches the first jobs of the next one (as BullMQ's own workers do), except the last of the run.
   * Returns whether any job was taken.
   */
  private async servePass(p: Parts): Promise<boolean> {
    const bMax = this.opts.bMax;
    const loads = await HeldQueue.loads(p.redis, p.holder.queues());
    this.watchdog?.fetched(loads.reduce((s, l) => s + l.waiting, 0));
    const pick = chooseQueue(loads, bMax);
    if (!pick) return false;
    const held = p.holder.get(pick.id)!;
    held.lastServedAt = Date.now();
    let worked = false;
    for (let run = 0; run < MAX_RUN_OF_BATCHES && !this.stopping; run++) {
      this.setState('collecting');
      const take = async (n: number) => {
        const t = await held.take(n, this.stopping);
        this.watchdog?.fetched();
        return t;
      };
      const taken = await collect({ take }, bMax, { maxWaitMs: this.opts.maxWaitMs, pollMs: 2 });
      if (taken.length > 0) {
        worked = true;
        await this.process(p, held, taken, run < MAX_RUN_OF_BATCHES - 1);
      }
      if (taken.length < bMax && held.prefetched.length === 0) break;
    }
    // jobs already taken are finished, stopping or not
    while (held.prefetched.length > 0) await this.process(p, held, held.prefetched.splice(0, bMax), false);
    return worked;
  }

  /** After a loop error, prefetched jobs are left to their locks: they expire, and the jobs run again (stalled check). */
  private abandonPrefetched(p: Parts): void {
    for (const h of p.holder.queues()) {
      if (h.prefetched.length === 0) continue;
      const jobs = h.prefetched.splice(0).map((t) => t.job.id);
      this.log.warn({ key: h.id, jobs }, 'jobs prefetched before a loop error are left to stall and run again');
    }
  }

  /** Runs what was collected: checks, cancels, batches, settles. `prefetch`: completions may fetch the next jobs. */
  private async process(p: Parts, held: HeldQueue, taken: Taken[], prefetch: boolean): Promise<void> {
    invariant(this.inHand === null, 'one collected batch is processed at a time');
    const renewer = new LockRenewer(held, this.opts.lockDurationMs, this.log, taken);
    this.inHand = renewer;
    const t0 = Date.now();
    for (const t of taken) this.metrics.queueWaitSeconds.observe({ key: held.id }, Math.max(0, t0 - t.job.timestamp) / 1000);
    const tokens0 = this.metrics.tokens.total();
    try {
      this.setState('running');
      const settled = (t: Taken) => renewer.untrack(t);
      const ready = await p.settler.admit(held, taken, settled);
      const runnable = await p.settler.dropCancelled(ready, settled);
      const groups = planBatches(runnable, (r) => r.job.attemptsStarted, this.opts.bMax);
      for (const g of groups) {
        if (g.length === 1 && g[0].job.attemptsStarted > 1) this.metrics.isolated.inc({ key: held.id });
        await this.runGroup(p, held, g, renewer, prefetch && g === groups[groups.length - 1]);
      }
    } finally {
      if (renewer.size > 0)
        this.log.warn({ key: held.id, jobs: renewer.size }, 'jobs left unsettled by an error: their locks expire and they run again');
      renewer.close();
      this.inHand = null;
      const end = Date.now();
      this.busyMs += end - t0;
      this.service.record(held.id, taken.length, this.metrics.tokens.total() - tokens0, end - t0, end);
    }
  }

  /** Runs a group; if it fails with several jobs, each runs again alone so one bad job cannot fail the others. */
  private async runGroup(p: Parts, held: HeldQueue, group: Ready[], renewer: LockRenewer, prefetch = false): Promise<void> {
    let out: RowResult[];
    const startedAt = Date.now();
    try {
      this.setState('running');
      out = await runBatch(held, group, {
        batchSizes: this.opts.batchSizes,
        faults: this.opts.faults,
        metrics: this.metrics,
        log: this.log,
      });
    } catch (e) {
      if (group.length > 1) {
        this.log.warn({ key: held.id, rows: group.length, err: (e as Error).message }, 'batch failed: running its jobs one by one');
        for (const g of group) {
          this.metrics.isolated.inc({ key: held.id });
          await this.runGroup(p, held, [g], renewer);
        }
        return;
      }
      this.setState('settling');
      await p.settler.failure(held, group[0], group[0].payload, e, false);
      renewer.untrack(group[0]);
      return;
    }
    this.setState('settling');
    await p.settler.success(held, group, out, prefetch, startedAt);
    for (const g of group) renewer.untrack(g);
  }

  /** What this worker reports about itself (heartbeat, demo summary). */
  stats(): WorkerStats {
    return workerStats({
      id: this.id,
      state: this._state,
      engine: this.engine,
      models: [...this.models.keys()],
      holder: this.parts?.holder ?? null,
      batchSizes: this.opts.batchSizes,
      metrics: this.metrics,
      busyMs: this.busyMs,
      warmMs: this.warmMs,
      startedAt: this.startedAt,
      assigned: this.opts.assigned,
      service: this.service,
      budgetBytes: this.opts.cacheBudgetBytes,
    });
  }

  /** Stops taking jobs, finishes the batch in hand, closes everything. Safe to call twice. */
  stop(): Promise<void> {
    this.closing ??= this.stopOnce();
    return this.closing;
  }

  /**
   * Each step runs whatever the others did; a failing one is logged with its name. The whole stop
   * is bounded (stopBudget of shutdownTimeoutMs): the batch in hand gets what is left of it, and
   * with Redis unreachable nothing waits for Redis (no last heartbeat, queues closed at once). Jobs
   * left unfinished are logged; their locks expire and stall recovery gives them to a worker again.
   */
  private async stopOnce(): Promise<void> {
    this.stopping = true;
    if (this._state === 'idle') this.setState('draining');
    const deadline = Date.now() + stopBudget(this.opts.shutdownTimeoutMs).finishMs;
    const inTime = (what: Promise<unknown> | null | undefined) => settledBefore(deadline, what);
    const finished = await inTime(
      (async () => {
        await runSteps(this.log, [
          ['finish starting', () => this.starting],
          ['finish the batch in hand', () => this.loopDone],
        ]);
      })(),
    );
    if (!finished) {
      const left = this.jobIdsInHand();
      this.log.warn(
        { jobs: left, shutdownTimeoutMs: this.opts.shutdownTimeoutMs, redisAnswering: this.watchdog?.answering() ?? false },
        `stop: could not finish the batch in hand in time (${left.length} job(s)): they come back through stall recovery`,
      );
      this.inHand?.close(); // no more lock renewals: the locks expire, another worker takes the jobs
    }
    this.setState('stopped');
    const redisOk = this.redis?.status === 'ready' && (this.watchdog?.answering() ?? false);
    if (!redisOk) this.log.warn('stop: Redis does not answer: no last heartbeat, queues closed without waiting for it');
    this.connection?.unwatch();
    this.watchdog?.stop();
    const closeBy = Date.now() + stopBudget(this.opts.shutdownTimeoutMs).closeMs;
    await runSteps(
      this.log,
      [
        ['stop the heartbeat timer', () => this.heartbeat?.stop()],
        // the last heartbeat stays a minute, for summaries
        ['write the last heartbeat', () => (redisOk ? this.heartbeat?.beat(60_000) : undefined)],
        ['close the key queues', () => this.closeQueues(!redisOk || !finished)],
        ['close the metrics server', () => this.closeMetricsServer()],
        ['dispose the engine', () => this.engine?.dispose()],
        ['disconnect from Redis', () => this.redis?.disconnect()],
      ],
      closeBy,
    );
    const e = this.engine?.stats();
    this.log.info(
      {
        jobs: this.metrics.jobsCompleted.total(),
        failed: this.metrics.jobsFailed.total(),
        batches: this.metrics.batches.total(),
        compiles: e?.compiles,
        retraces: e?.retraces,
      },
      'worker stopped',
    );
  }

  /** Closes the queues' BullMQ workers; `force`: without waiting for Redis (their connections are dropped). */
  private async closeQueues(force: boolean): Promise<void> {
    const holder = this.parts?.holder;
    if (!holder) return;
    if (force) await Promise.all(holder.queues().map((h) => h.close(true).catch(() => {})));
    await holder.closeAll();
  }

  /** The ids of the jobs taken and not settled. */
  private jobIdsInHand(): string[] {
    const ids = this.inHand?.jobIds() ?? [];
    for (const h of this.parts?.holder.queues() ?? []) for (const t of h.prefetched) ids.push(t.job.id ?? '?');
    return ids;
  }

  private closeMetricsServer(): Promise<void> | undefined {
    const server = this.metricsServer;
    if (!server) return undefined;
    return new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  }
}
