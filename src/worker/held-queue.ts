/**
 * One held key's queue: its BullMQ worker (used without a processor), the jobs it hands out, and
 * what the worker believes waits in it (counts read once per loop pass, so that takes never ask
 * Redis for jobs that are not there).
 */
import { type Job, Worker as BullWorker, type JobJson } from 'bullmq';
import type { Redis } from 'ioredis';
import type { CompileKey } from '../shared/compile-key.js';
import type { QueueRef } from '../shared/keys.js';
import type { JobPayload } from '../shared/schemas.js';
import type { Logger } from '../observability/logger.js';
import type { EngineModel, EngineVariant } from './engine.js';
import type { QueueLoad } from './micro-batcher.js';
import { BAD_JSON_MARK } from './payload.js';
import { isConnectionError } from '../shared/outage.js';

/** A job taken from a queue, with the lock token it was taken with. */
export interface Taken {
  job: Job;
  token: string;
}

/** A taken job whose payload passed its checks. */
export interface Ready extends Taken {
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

export interface QueueOpenOptions {
  redis: Redis;
  /** the worker's id: BullMQ's worker name */
  workerId: string;
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
  /** a fresh lock token per take */
  nextToken: () => string;
  log: Logger;
}

/** A key this worker holds: its compiled variants and its queue. */
export class HeldQueue {
  /** ms since the epoch this queue last got a batch (0 if never) */
  lastServedAt = 0;
  /** jobs believed to be waiting (from the last count): takes never ask for more, so no empty moveToActive calls */
  waitingHint = 0;
  /** retries waiting for their backoff: one take may promote a due one */
  delayedHint = 0;
  /** jobs handed back by completions of the previous batch (already locked): the next batch starts with them */
  readonly prefetched: Taken[] = [];
  readonly heldAt = Date.now();

  private constructor(
    readonly id: string,
    readonly key: CompileKey,
    readonly ref: QueueRef,
    readonly model: EngineModel,
    readonly variants: Map<number, EngineVariant>,
    /** device bytes of its variants */
    readonly bytes: number,
    private readonly bull: ManualWorker,
    private readonly redis: Redis,
    private readonly nextToken: () => string,
  ) {}

  /** Opens the key's queue (its BullMQ worker and stalled check); the variants are already compiled. */
  static async open(
    id: string,
    key: CompileKey,
    ref: QueueRef,
    model: EngineModel,
    variants: Map<number, EngineVariant>,
    bytes: number,
    o: QueueOpenOptions,
  ): Promise<HeldQueue> {
    const bull = new ManualWorker(ref.bullName, null, {
      connection: o.redis,
      prefix: ref.bullPrefix,
      autorun: false,
      name: o.workerId,
      lockDuration: o.lockDurationMs,
      stalledInterval: o.stalledIntervalMs,
      maxStalledCount: o.maxStalledCount,
    });
    // a lost connection is logged once per outage by the worker's connection watch, not once per queue
    bull.on('error', (e) => {
      if (!isConnectionError(e)) o.log.warn({ err: e.message }, 'queue error');
    });
    await bull.waitUntilReady();
    void bull.startStalledCheckTimer();
    return new HeldQueue(id, key, ref, model, variants, bytes, bull, o.redis, o.nextToken);
  }

  /**
   * Takes up to n jobs without blocking, prefetched ones first. It asks for no more jobs than are
   * waiting (an empty take still costs Redis a script call), and for one when only delayed retries
   * are there (a take promotes those that are due). With `stopping`, only prefetched jobs come out.
   */
  async take(n: number, stopping: boolean): Promise<Taken[]> {
    if (this.prefetched.length > 0) return this.prefetched.splice(0, n);
    if (stopping) return [];
    if (this.waitingHint <= 0) this.waitingHint = await this.redis.llen(this.ref.waitList);
    let k = Math.min(n, this.waitingHint);
    if (k <= 0) {
      if (this.delayedHint <= 0) return [];
      k = 1;
      this.delayedHint = 0;
    }
    this.waitingHint -= k;
    const tokens = Array.from({ length: k }, () => this.nextToken());
    const jobs = await Promise.all(tokens.map((t) => this.bull.getNextJob(t, { block: false })));
    const out: Taken[] = [];
    jobs.forEach((job, i) => {
      if (job) out.push({ job, token: tokens[i] });
    });
    return out;
  }

  /** Completes a job; with `fetchNext`, the next waiting job (if any) comes back locked and is prefetched. */
  async complete(t: Taken, fetchNext: boolean): Promise<void> {
    const next = await t.job.moveToCompleted(null, t.token, fetchNext);
    if (!fetchNext) return;
    const job = await this.bull.jobFromCompletion(next, t.token);
    if (job) this.prefetched.push({ job, token: t.token });
  }

  /** Extends the locks of these jobs; returns the ids whose lock could not be extended. */
  async extendLocks(jobs: Taken[], durationMs: number): Promise<string[]> {
    const failed = await this.bull.extendJobLocks(
      jobs.map((t) => t.job.id!),
      jobs.map((t) => t.token),
      durationMs,
    );
    return Array.isArray(failed) ? failed : [];
  }

  /** Closes the queue's BullMQ worker; `force`: drops its connections without waiting for Redis. */
  close(force = false): Promise<void> {
    return this.bull.close(force);
  }

  /** The Redis key of one of this queue's job hashes, as BullMQ names it. */
  jobKey(jobId: string): string {
    return this.bull.toKey(jobId);
  }

  /** Reads the waiting and delayed counts of these queues in one round trip, and keeps them as hints. */
  static async loads(redis: Redis, list: HeldQueue[]): Promise<QueueLoad[]> {
    if (list.length === 0) return [];
    const p = redis.pipeline();
    for (const h of list) p.llen(h.ref.waitList).zcard(h.ref.delayedSet);
    const out = (await p.exec()) ?? [];
    return list.map((h, i) => {
      h.waitingHint = Number(out[2 * i]?.[1] ?? 0);
      h.delayedHint = Number(out[2 * i + 1]?.[1] ?? 0);
      return { id: h.id, waiting: h.waitingHint, delayed: h.delayedHint, lastServedAt: h.lastServedAt };
    });
  }
}
