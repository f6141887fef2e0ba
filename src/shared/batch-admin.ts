/**
 * Managing the batches kept in Redis: listing them (newest first, from the `<prefix>:batches` sorted
 * set that a batch's creation writes) and deleting one with everything it left behind: its record,
 * items, results, errors, and the jobs still in the queues of its compile keys.
 *
 * Everything is done in chunks (a page of the index, a HSCAN page of items, a SCAN page of keys), so
 * that no single command holds Redis for long, however large the batch or the number of batches.
 */
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { BatchStore, type BatchRecord } from './batch-store.js';
import { BatchgenError } from './errors.js';
import { jobIdOf, type Keyspace, QUEUE_EVENTS_MAX_LEN } from './keys.js';
import type { BatchStatus } from './schemas.js';

/** Statuses in which requests of the batch may still be queued or running. */
export const LIVE_STATUSES: readonly BatchStatus[] = ['validating', 'in_progress', 'cancelling'];

/** Whether `delete` may go on for a batch in this status (null: no record left). */
export function deleteDecision(status: BatchStatus | null, force: boolean): { ok: true } | { ok: false; reason: string } {
  if (force || status === null || !LIVE_STATUSES.includes(status)) return { ok: true };
  return { ok: false, reason: `the batch is ${status}: cancel it first (batchgen cancel), or pass --force to delete it anyway` };
}

/** Pages of batch records, newest first. Index entries whose records are gone (expired) are dropped from the index. */
export async function* listBatches(
  redis: Redis,
  keys: Keyspace,
  opts: { limit?: number; pageSize?: number } = {},
): AsyncGenerator<BatchRecord[]> {
  const store = new BatchStore(redis, keys);
  const pageSize = opts.pageSize ?? 200;
  let left = opts.limit ?? Infinity;
  let start = 0;
  while (left > 0) {
    const want = Math.min(pageSize, left);
    const ids = await redis.zrevrange(keys.batches(), start, start + want - 1);
    if (ids.length === 0) return;
    const recs = await Promise.all(ids.map((id) => store.get(id)));
    const gone = ids.filter((_, i) => recs[i] === null);
    if (gone.length) await redis.zrem(keys.batches(), ...gone);
    start += ids.length - gone.length; // the removed entries no longer take places in the index
    const page = recs.filter((r): r is BatchRecord => r !== null);
    left -= page.length;
    if (page.length) yield page;
    if (ids.length < want) return; // the end of the index
  }
}

export interface DeleteProgress {
  /** items of the batch looked at so far */
  scanned: number;
  /** jobs removed from their queues so far */
  removedJobs: number;
  /** jobs found running (locked by a worker), which cannot be removed */
  runningJobs: number;
}

export interface DeleteReport extends DeleteProgress {
  batchId: string;
  /** the status the batch had (null when only leftovers were found) */
  status: BatchStatus | null;
  /** Redis keys of the batch deleted (its records and any leftovers; job keys not included) */
  keysDeleted: number;
}

export interface DeleteOptions {
  /** Delete a batch that is still live, and leave its running jobs to finish unrecorded. */
  force?: boolean;
  onProgress?: (p: DeleteProgress) => void;
}

/** Every key whose name is the batch's record or starts with it and ':' (SCAN, page by page). */
async function* batchKeyNames(redis: Redis, keys: Keyspace, batchId: string): AsyncGenerator<string[]> {
  const record = keys.batch(batchId).record;
  if ((await redis.exists(record)) === 1) yield [record];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${record}:*`, 'COUNT', 1000);
    cursor = next;
    if (found.length) yield found;
  } while (cursor !== '0');
}

/**
 * Deletes a batch: removes its waiting, delayed and prioritized jobs (BullMQ's `remove`), then every
 * key of the batch. Refuses a live batch without `force`, and a batch with running jobs without
 * `force` (nothing of the records is deleted then). With `force`, running jobs finish and their
 * results are dropped (the batch is unknown by then), after which their job keys go too.
 */
export async function deleteBatch(redis: Redis, keys: Keyspace, batchId: string, opts: DeleteOptions = {}): Promise<DeleteReport> {
  const store = new BatchStore(redis, keys);
  const rec = await store.get(batchId);
  if (rec === null) {
    let any = false;
    for await (const page of batchKeyNames(redis, keys, batchId)) any ||= page.length > 0;
    if (!any) {
      await redis.zrem(keys.batches(), batchId);
      throw new BatchgenError('not_found', `batch ${batchId} not found (unknown, deleted, or expired after its retention)`);
    }
  }
  const decision = deleteDecision(rec?.status ?? null, opts.force === true);
  if (!decision.ok) throw new BatchgenError('batch_active', `batch ${batchId}: ${decision.reason}`);

  const progress: DeleteProgress = { scanned: 0, removedJobs: 0, runningJobs: 0 };
  const queues = new Map<string, Queue>();
  const queueOf = (keyId: string): Queue => {
    let q = queues.get(keyId);
    if (!q) {
      const ref = keys.queue(keyId);
      q = new Queue(ref.bullName, { connection: redis, prefix: ref.bullPrefix, streams: { events: { maxLen: QUEUE_EVENTS_MAX_LEN } } });
      q.on('error', () => {});
      queues.set(keyId, q);
    }
    return q;
  };
  try {
    for await (const chunk of store.items(batchId)) {
      const queued = chunk
        .filter(([, item]) => item.key !== null)
        .map(([cid, item]) => ({ jobId: jobIdOf(batchId, cid), keyId: item.key! }));
      // which of them still have a job hash (most are gone once they ran)
      const p = redis.pipeline();
      for (const j of queued) {
        const ref = keys.queue(j.keyId);
        p.exists(`${ref.bullPrefix}:${ref.bullName}:${j.jobId}`);
      }
      const exists = ((await p.exec()) ?? []).map(([, v]) => v === 1);
      const codes = await Promise.all(queued.map((j, i) => (exists[i] ? queueOf(j.keyId).remove(j.jobId) : Promise.resolve(-1))));
      for (const c of codes) {
        if (c === 1) progress.removedJobs += 1;
        else if (c === 0) progress.runningJobs += 1; // locked by a worker: BullMQ does not remove an active job
      }
      progress.scanned += chunk.length;
      opts.onProgress?.({ ...progress });
    }
  } finally {
    for (const q of queues.values()) await q.close().catch(() => {});
  }
  if (progress.runningJobs > 0 && opts.force !== true) {
    throw new BatchgenError(
      'batch_active',
      `batch ${batchId}: ${progress.runningJobs} request(s) are running on a worker; wait for them to finish, or pass --force (their results are then dropped)`,
    );
  }
  let keysDeleted = 0;
  for await (const page of batchKeyNames(redis, keys, batchId)) keysDeleted += await redis.unlink(...page);
  await redis.zrem(keys.batches(), batchId);
  return { batchId, status: rec?.status ?? null, keysDeleted, ...progress };
}
