/**
 * Settling jobs: stalled-too-often and invalid jobs failed before running; results written (once per custom_id) and jobs completed; failures retried with
 * backoff or failed for good with their error written; invalid payloads failed at once, unretried;
 * jobs of cancelled batches completed without running.
 */
import { groupBy } from '../shared/group-by.js';
import { UnrecoverableError } from 'bullmq';
import type { RowResult } from '../compiler/types.js';
import type { BatchStore } from '../shared/batch-store.js';
import { parseJobId } from '../shared/keys.js';
import type { JobPayload } from '../shared/schemas.js';
import type { Logger } from '../observability/logger.js';
import type { HeldQueue, Ready, Taken } from './held-queue.js';
import type { WorkerMetrics } from './metrics.js';
import { checkPayload } from './payload.js';
import { decideFailure, queuedMs, resultRecord } from './results.js';

/** How long a batch's status is trusted before it is read again (cancel latency). */
const STATUS_TTL_MS = 500;
/** Statuses cached beyond this many are pruned of stale entries. */
const STATUS_CACHE_MAX = 10_000;

export interface SettlerContext {
  workerId: string;
  store: BatchStore;
  metrics: WorkerMetrics;
  log: Logger;
  /** true once a stop was asked for: completions then fetch no next job */
  stopping(): boolean;
}

/** Batch and custom_id of a job id built by jobIdOf; nulls when it is not one. */
function idsOfJob(jobId: string | undefined): { batchId: string | null; customId: string | null } {
  if (!jobId) return { batchId: null, customId: null };
  try {
    return parseJobId(jobId);
  } catch {
    return { batchId: null, customId: null };
  }
}

/** Writes what became of each job and moves it out of its queue. */
export class Settler {
  private readonly statusCache = new Map<string, { status: string | null; at: number }>();

  constructor(private readonly ctx: SettlerContext) {}

  /**
   * Jobs that stalled too often and jobs with invalid payloads fail at once (unretried); the others
   * come back ready to run. `settled` is told of each job failed here.
   */
  async admit(held: HeldQueue, taken: Taken[], settled: (t: Taken) => void): Promise<Ready[]> {
    const ready: Ready[] = [];
    for (const t of taken) {
      if (t.job.deferredFailure) {
        await this.failure(
          held,
          t,
          null,
          new Error(`${t.job.deferredFailure} (a worker holding it stopped or died ${t.job.stalledCounter} times)`),
          true,
        );
        settled(t);
        continue;
      }
      const chk = checkPayload(t.job.id, t.job.data, {
        key: held.key,
        contextLength: held.model.contextLength,
        vocabSize: held.model.vocabSize,
      });
      if (!chk.ok) {
        this.ctx.log.warn({ key: held.id, job: t.job.id, reason: chk.reason }, 'invalid payload: failed without retry');
        await this.invalid(held.id, t, chk.reason, chk.batchId, chk.customId, chk.line);
        settled(t);
        continue;
      }
      ready.push({ ...t, payload: chk.payload });
    }
    return ready;
  }

  /**
   * Writes the results of a group (one script call per batch run), then completes its jobs. With
   * `prefetch` (and no stop asked), each completion also takes the next waiting job, if any.
   * `startedAt` (ms since the epoch): when the group's batch started; each result records how long
   * its job waited for it (`queued_ms`).
   */
  async success(held: HeldQueue, group: Ready[], out: RowResult[], prefetch: boolean, startedAt?: number): Promise<void> {
    const { store, metrics, log } = this.ctx;
    const recs = await Promise.all(
      group.map((r, i) =>
        resultRecord(r.payload, out[i], held.model.decode, {
          worker: this.ctx.workerId,
          deliveries: r.job.attemptsStarted,
          ...(startedAt === undefined ? {} : { queuedMs: queuedMs(r.job.timestamp, startedAt) }),
        }),
      ),
    );
    const byBatch = groupBy(group.keys(), (i) => group[i].payload.batch_id);
    await Promise.all(
      [...byBatch].map(async ([batchId, idx]) => {
        const codes = await store.writeResults(
          batchId,
          idx.map((i) => recs[i]),
        );
        codes.forEach((w, j) => {
          const job = group[idx[j]].job;
          if (w === 0) {
            metrics.duplicates.inc({ key: held.id });
            log.info({ job: job.id }, 'second delivery: result already written, not written again');
          } else if (w < 0) {
            log.warn({ job: job.id, batch: batchId }, 'result for an unknown batch or custom_id (expired, or never submitted): not stored');
          }
        });
      }),
    );
    metrics.jobsCompleted.inc({ key: held.id }, group.length);
    const fetchNext = prefetch && !this.ctx.stopping();
    const wanted = fetchNext ? Math.min(group.length, Math.max(0, held.waitingHint)) : 0;
    await Promise.all(
      group.map(async (r, i) => {
        try {
          await held.complete(r, i < wanted);
        } catch (e) {
          log.warn({ job: r.job.id, err: (e as Error).message }, 'could not complete job (lock lost?); its result is stored once');
        }
      }),
    );
    held.waitingHint -= wanted;
  }

  /** A failed job: retried with backoff while attempts remain and the error is not permanent; else its error is written. */
  async failure(held: HeldQueue, t: Taken, payload: JobPayload | null, err: unknown, forceFinal: boolean): Promise<void> {
    const { metrics, log } = this.ctx;
    const d = decideFailure(err, t.job.attemptsMade, t.job.opts.attempts ?? 1);
    const final = forceFinal || d.final;
    const { batchId, customId } = payload ? { batchId: payload.batch_id, customId: payload.custom_id } : idsOfJob(t.job.id);
    const data = t.job.data as { line?: unknown } | undefined;
    const line = payload?.line ?? (typeof data?.line === 'number' ? data.line : null);
    if (final) {
      if (batchId && customId) await this.writeErrorSafe(batchId, customId, line, d.code, d.message);
      metrics.jobsFailed.inc({ key: held.id });
      log.warn({ key: held.id, job: t.job.id, code: d.code, err: d.message }, 'job failed');
      await t.job
        .moveToFailed(new UnrecoverableError(d.message), t.token, false)
        .catch((e: Error) => log.warn({ job: t.job.id, err: e.message }, 'could not fail job'));
    } else {
      metrics.jobsRetried.inc({ key: held.id });
      log.warn(
        { key: held.id, job: t.job.id, code: d.code, err: d.message, attempt: t.job.attemptsMade + 1 },
        'job failed: retrying with backoff',
      );
      await t.job
        .moveToFailed(err instanceof Error ? err : new Error(String(err)), t.token, false)
        .catch((e: Error) => log.warn({ job: t.job.id, err: e.message }, 'could not fail job'));
    }
  }

  /** A job whose payload failed its checks: its error is written and it fails at once, unretried. */
  async invalid(
    key: string,
    t: Taken,
    reason: string,
    batchId: string | null,
    customId: string | null,
    line: number | null,
  ): Promise<void> {
    if (batchId && customId) await this.writeErrorSafe(batchId, customId, line, 'invalid_payload', reason);
    this.ctx.metrics.jobsFailed.inc({ key });
    await t.job
      .moveToFailed(new UnrecoverableError(`invalid payload: ${reason}`), t.token, false)
      .catch((e: Error) => this.ctx.log.warn({ job: t.job.id, err: e.message }, 'could not fail job'));
  }

  /**
   * Jobs of batches being cancelled are completed without running, and counted as cancelled; the
   * others are returned. `settled` is told of each job completed here. Batch statuses are cached for
   * STATUS_TTL_MS: a cancel reaches running workers within that time.
   */
  async dropCancelled(ready: Ready[], settled: (t: Taken) => void): Promise<Ready[]> {
    const cancelled = await this.cancelledBatches(ready.map((r) => r.payload.batch_id));
    if (cancelled.size === 0) return ready;
    const keep: Ready[] = [];
    for (const r of ready) {
      if (!cancelled.has(r.payload.batch_id)) {
        keep.push(r);
        continue;
      }
      await this.ctx.store.markCancelled(r.payload.batch_id, [r.payload.custom_id]);
      await r.job
        .moveToCompleted(null, r.token, false)
        .catch((e: Error) => this.ctx.log.warn({ job: r.job.id, err: e.message }, 'could not complete a cancelled job'));
      settled(r);
    }
    return keep;
  }

  /** Which of these batches are cancelling or cancelled (statuses read when their cache is stale). */
  private async cancelledBatches(batchIds: string[]): Promise<Set<string>> {
    const now = Date.now();
    const ids = [...new Set(batchIds)];
    const stale = ids.filter((id) => (this.statusCache.get(id)?.at ?? 0) + STATUS_TTL_MS < now);
    if (stale.length) {
      const st = await this.ctx.store.statuses(stale);
      stale.forEach((id, i) => this.statusCache.set(id, { status: st[i], at: now }));
      if (this.statusCache.size > STATUS_CACHE_MAX)
        for (const [id, v] of this.statusCache) if (v.at + STATUS_TTL_MS < now) this.statusCache.delete(id);
    }
    return new Set(ids.filter((id) => ['cancelling', 'cancelled'].includes(this.statusCache.get(id)?.status ?? '')));
  }

  private async writeErrorSafe(batchId: string, customId: string, line: number | null, code: string, message: string): Promise<void> {
    try {
      await this.ctx.store.writeError(batchId, { line, custom_id: customId, error: { code, message } });
    } catch (e) {
      this.ctx.log.warn({ batch: batchId, err: (e as Error).message }, 'could not record the error in its batch');
    }
  }
}
