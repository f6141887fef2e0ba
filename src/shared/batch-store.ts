/**
 * Batch runs in Redis: one record per batch (status, counts, timestamps, settings) and, beside it,
 * the batch's items, results and errors. Results live here, not in BullMQ's job hashes (which are
 * removed when a job finishes), so Redis memory stays bounded by the retention setting.
 *
 * Every write that changes counts is one Lua script, so counts stay exact however many times a job
 * is delivered: a custom_id gets at most one result or one error, and is counted once.
 *
 * Status: `validating` (a submit is adding requests) → `in_progress` → `completed` (every counted
 * request has a result or an error) or `failed` (no request could be accepted); a cancel moves
 * `validating`/`in_progress` to `cancelling`, then `cancelled` once the running requests are done.
 * A finished batch's keys expire after `retention_s`; so do a `validating` batch's when nothing is
 * added for that long (a submit that died), each write of a submission pushing the expiry back.
 *
 * Idempotency: each item keeps the fingerprint of its request's content. A resubmitted custom_id with
 * the same fingerprint is already present (nothing is written or enqueued again); with another one it
 * is an `idempotency_conflict` for that line, and what is stored stays as it was. A finished batch
 * (completed, cancelled, failed) takes no new custom_id (`batch_finished`); resubmitting its own
 * requests is a no-op.
 *
 * The order list holds every settled custom_id (results and errors) in settlement order: a cursor into
 * it lets a reader follow the batch without reading anything twice.
 */
import type { Redis } from 'ioredis';
import { BATCH_SCRIPTS as SCRIPTS } from './batch-scripts.js';
import { BatchgenError } from './errors.js';
import type { BatchKeys, Keyspace } from './keys.js';
import type { BatchStatus, ErrorRecord, RequestForm, ResultRecord } from './schemas.js';

/** Default retention of a finished batch: 7 days. */
export const DEFAULT_RETENTION_S = 7 * 24 * 3600;

export interface BatchRecord {
  id: string;
  status: BatchStatus;
  /** ms since the epoch */
  created_at: number;
  in_progress_at: number | null;
  completed_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  failed_at: number | null;
  /** when the batch's keys expire (ms), once it is finished */
  expires_at: number | null;
  retention_s: number;
  /** where the requests came from (a file name), for people */
  input: string;
  /** the endpoints of the requests (`/v1/completions`, `/v1/chat/completions`), sorted */
  endpoints?: string[];
  /** the results and errors files a `submit --wait` wrote, when it did */
  output_file?: string | null;
  error_file?: string | null;
  counts: {
    /** counted requests: lines that are JSON objects with a custom_id, once each */
    total: number;
    completed: number;
    failed: number;
    /** requests removed by a cancel before they ran */
    cancelled: number;
    /** lines that are not requests (bad JSON, no custom_id, a repeated custom_id): not in total */
    rejected: number;
  };
}

/** An item of a batch: where its request came from and which queue it went to. */
export interface BatchItem {
  line: number;
  /** compile key id, or null for a request that failed validation */
  key: string | null;
  /** fingerprint of the request's content (see requestFingerprint) */
  fp?: string;
  /** the form of the request line, which its output line follows */
  form?: RequestForm;
}

export type RegisterEntry =
  | { custom_id: string; item: BatchItem; kind: 'queue' }
  | { custom_id: string; item: BatchItem; kind: 'error'; error: ErrorRecord };

/**
 * What registering one request did: `enqueue` (new, its job must be added), `requeue` (already
 * present and not settled: its job is added again, which BullMQ ignores when it has it), `present`
 * (already present, settled or cancelled: nothing to do), `invalid` (new, failed validation: its
 * error is stored), `conflict` (the custom_id is stored with other content: nothing written),
 * `finished` (a new custom_id for a finished batch: nothing written).
 */
export type RegisterOutcome = 'enqueue' | 'requeue' | 'present' | 'invalid' | 'conflict' | 'finished';
const OUTCOMES: Record<number, RegisterOutcome> = {
  1: 'enqueue',
  2: 'requeue',
  0: 'present',
  4: 'invalid',
  [-1]: 'conflict',
  [-2]: 'finished',
};

/** A settled request, read from the order list. */
export type Settled =
  | { custom_id: string; result: ResultRecord; error?: undefined }
  | { custom_id: string; error: ErrorRecord; result?: undefined };

export const FINISHED_STATUSES: readonly BatchStatus[] = ['completed', 'cancelled', 'failed'];

type ScriptName = keyof typeof SCRIPTS;
type ScriptFn = (...args: (string | number)[]) => Promise<unknown>;

function ensureScripts(redis: Redis): void {
  const r = redis as unknown as Record<string, unknown>;
  for (const [name, lua] of Object.entries(SCRIPTS)) {
    if (typeof r[name] !== 'function') redis.defineCommand(name, { numberOfKeys: 7, lua });
  }
}

function keyList(k: BatchKeys): string[] {
  return [k.record, k.items, k.results, k.errors, k.rejects, k.cancelled, k.order];
}

function numOrNull(v: string | undefined): number | null {
  return v === undefined || v === '' ? null : Number(v);
}

export class BatchStore {
  constructor(
    readonly redis: Redis,
    readonly keys: Keyspace,
  ) {
    ensureScripts(redis);
  }

  private run(name: ScriptName, batchId: string, ...argv: (string | number)[]): Promise<unknown> {
    const fn = (this.redis as unknown as Record<string, ScriptFn>)[name];
    return fn.call(this.redis, ...keyList(this.keys.batch(batchId)), ...argv);
  }

  /**
   * Starts (or restarts, for a resubmission) the submission of a batch. Returns `validating`, or the
   * status of a finished batch (which is only checked against, never written). Refuses a cancelling one.
   */
  async begin(batchId: string, opts: { retentionS?: number; input?: string } = {}): Promise<BatchStatus> {
    const st = (await this.run(
      'bgBegin',
      batchId,
      batchId,
      Date.now(),
      opts.retentionS ?? DEFAULT_RETENTION_S,
      opts.input ?? '',
    )) as BatchStatus;
    if (st === 'cancelling') {
      throw new BatchgenError('cancelled', `batch ${batchId} is being cancelled: it cannot take requests (use another batch id)`);
    }
    if (st === 'validating') await this.redis.zadd(this.keys.batches(), 'NX', Date.now(), batchId);
    return st;
  }

  /**
   * Registers requests (counted once per custom_id, with their content's fingerprint) and the errors
   * of those that failed validation; records the endpoints seen. Returns what happened to each entry.
   */
  async register(batchId: string, entries: RegisterEntry[], endpoints: Iterable<string> = []): Promise<RegisterOutcome[]> {
    if (entries.length === 0) return [];
    const argv: (string | number)[] = [Date.now(), [...endpoints].join(',')];
    for (const e of entries) {
      argv.push(
        e.custom_id,
        JSON.stringify(e.item),
        e.kind === 'queue' ? 'q' : 'e',
        e.kind === 'error' ? JSON.stringify(e.error) : '',
        e.item.fp ?? '',
      );
    }
    try {
      const out = (await this.run('bgRegister', batchId, ...argv)) as number[];
      return out.map((x) => OUTCOMES[x]);
    } catch (e) {
      const m = /BATCH_NOT_VALIDATING (\S+)/.exec((e as Error).message);
      if (m) throw new BatchgenError('cancelled', `batch ${batchId} is ${m[1]}: submission stopped`);
      throw e;
    }
  }

  /** Records lines that are not requests (not counted in total). */
  async reject(batchId: string, errors: ErrorRecord[]): Promise<void> {
    if (errors.length === 0) return;
    const argv: (string | number)[] = [Date.now()];
    for (const e of errors) argv.push(String(e.line ?? 0), JSON.stringify(e));
    await this.run('bgReject', batchId, ...argv);
  }

  /** Ends a submission: the batch is in progress (or already finished). Returns the status. */
  async endSubmit(batchId: string): Promise<BatchStatus> {
    return (await this.run('bgEndSubmit', batchId, Date.now())) as BatchStatus;
  }

  /** Writes a result once. 1 written, 0 already settled (a second delivery), -1 unknown batch, -2 not an item of the batch. */
  async writeResult(batchId: string, r: ResultRecord): Promise<number> {
    return (await this.writeResults(batchId, [r]))[0];
  }

  /** Writes results of one batch in one round trip; a code per result, as writeResult. */
  async writeResults(batchId: string, rs: ResultRecord[]): Promise<number[]> {
    if (rs.length === 0) return [];
    const argv: (string | number)[] = [Date.now(), 'r'];
    for (const r of rs) argv.push(r.custom_id, JSON.stringify(r));
    return (await this.run('bgSettle', batchId, ...argv)) as number[];
  }

  /** Writes an error once (same return values as writeResult). */
  async writeError(batchId: string, e: ErrorRecord & { custom_id: string }): Promise<number> {
    return ((await this.run('bgSettle', batchId, Date.now(), 'e', e.custom_id, JSON.stringify(e))) as number[])[0];
  }

  /** Moves the batch to cancelling (when it is not finished). Returns the status, or null for an unknown batch. */
  async requestCancel(batchId: string): Promise<BatchStatus | null> {
    return (await this.run('bgCancel', batchId, Date.now())) as BatchStatus | null;
  }

  /** Counts requests whose jobs a cancel removed. */
  async markCancelled(batchId: string, customIds: string[]): Promise<number> {
    if (customIds.length === 0) return 0;
    return (await this.run('bgCancelItems', batchId, Date.now(), ...customIds)) as number;
  }

  /** Records the files a `submit --wait` wrote (status --json gives them as output_file_id, error_file_id). */
  async setFiles(batchId: string, files: { output?: string; errors?: string }): Promise<void> {
    await this.run('bgSetFiles', batchId, files.output ?? '', files.errors ?? '');
  }

  /** Re-evaluates the status from the counts. */
  async finalize(batchId: string): Promise<BatchStatus | null> {
    return (await this.run('bgFinalize', batchId, Date.now())) as BatchStatus | null;
  }

  async get(batchId: string): Promise<BatchRecord | null> {
    const h = await this.redis.hgetall(this.keys.batch(batchId).record);
    if (!h?.status) return null;
    return {
      id: h.id ?? batchId,
      status: h.status as BatchStatus,
      created_at: Number(h.created_at),
      in_progress_at: numOrNull(h.in_progress_at),
      completed_at: numOrNull(h.completed_at),
      cancelling_at: numOrNull(h.cancelling_at),
      cancelled_at: numOrNull(h.cancelled_at),
      failed_at: numOrNull(h.failed_at),
      expires_at: numOrNull(h.expires_at),
      retention_s: Number(h.retention_s ?? DEFAULT_RETENTION_S),
      input: h.input ?? '',
      endpoints: Object.keys(h)
        .filter((f) => f.startsWith('ep:'))
        .map((f) => f.slice(3))
        .sort(),
      output_file: h.output_file ?? null,
      error_file: h.error_file ?? null,
      counts: {
        total: Number(h.total ?? 0),
        completed: Number(h.completed ?? 0),
        failed: Number(h.failed ?? 0),
        cancelled: Number(h.cancelled ?? 0),
        rejected: Number(h.rejected ?? 0),
      },
    };
  }

  /** The statuses of several batches in one round trip (null for unknown ones). */
  async statuses(batchIds: string[]): Promise<(BatchStatus | null)[]> {
    if (batchIds.length === 0) return [];
    const p = this.redis.pipeline();
    for (const id of batchIds) p.hget(this.keys.batch(id).record, 'status');
    const out = (await p.exec()) ?? [];
    return out.map(([err, v]) => (err ? null : ((v as BatchStatus | null) ?? null)));
  }

  /** Items of a batch (custom_id → item), in chunks, for cancel. */
  async *items(batchId: string): AsyncGenerator<[string, BatchItem][]> {
    const key = this.keys.batch(batchId).items;
    let cursor = '0';
    do {
      const [next, flat] = await this.redis.hscan(key, cursor, 'COUNT', 500);
      cursor = next;
      const chunk: [string, BatchItem][] = [];
      for (let i = 0; i < flat.length; i += 2) chunk.push([flat[i], JSON.parse(flat[i + 1]) as BatchItem]);
      if (chunk.length) yield chunk;
    } while (cursor !== '0');
  }

  /** Which of these custom_ids already have a result or an error. */
  async settled(batchId: string, customIds: string[]): Promise<boolean[]> {
    if (customIds.length === 0) return [];
    const k = this.keys.batch(batchId);
    const p = this.redis.pipeline();
    for (const cid of customIds) {
      p.hexists(k.results, cid);
      p.hexists(k.errors, cid);
    }
    const out = (await p.exec()) ?? [];
    return customIds.map((_, i) => out[2 * i]?.[1] === 1 || out[2 * i + 1]?.[1] === 1);
  }

  /**
   * Settled requests (results and errors) in settlement order, from position `offset` of the order
   * list on, in chunks; `next` is the position after the chunk (a cursor to resume from).
   */
  async *settledFrom(batchId: string, offset = 0, chunkSize = 500): AsyncGenerator<{ next: number; entries: Settled[] }> {
    const k = this.keys.batch(batchId);
    let at = offset;
    for (;;) {
      const ids = await this.redis.lrange(k.order, at, at + chunkSize - 1);
      if (ids.length === 0) return;
      const [rs, es] = await Promise.all([this.redis.hmget(k.results, ...ids), this.redis.hmget(k.errors, ...ids)]);
      const entries: Settled[] = [];
      ids.forEach((cid, i) => {
        if (rs[i] !== null) entries.push({ custom_id: cid, result: JSON.parse(rs[i]!) as ResultRecord });
        else if (es[i] !== null) entries.push({ custom_id: cid, error: JSON.parse(es[i]!) as ErrorRecord });
      });
      at += ids.length;
      yield { next: at, entries };
      if (ids.length < chunkSize) return;
    }
  }

  /** Results in completion order, from position `offset` of the order list on, in chunks. */
  async *results(batchId: string, offset = 0, chunkSize = 500): AsyncGenerator<ResultRecord[]> {
    for await (const { entries } of this.settledFrom(batchId, offset, chunkSize)) {
      const rs = entries.flatMap((e) => (e.result ? [e.result] : []));
      if (rs.length) yield rs;
    }
  }

  /** The items of these custom_ids (null for one that is not an item of the batch). */
  async itemsOf(batchId: string, customIds: string[]): Promise<(BatchItem | null)[]> {
    if (customIds.length === 0) return [];
    const vals = await this.redis.hmget(this.keys.batch(batchId).items, ...customIds);
    return vals.map((v) => (v === null ? null : (JSON.parse(v) as BatchItem)));
  }

  /**
   * Every error of a batch, by line: failed requests, rejected lines, and requests a cancel removed
   * before they ran (code `cancelled`).
   */
  async errors(batchId: string): Promise<ErrorRecord[]> {
    const k = this.keys.batch(batchId);
    const [errs, rejects, cancelled] = await Promise.all([
      this.redis.hvals(k.errors),
      this.redis.hvals(k.rejects),
      this.redis.smembers(k.cancelled),
    ]);
    const all = [...errs, ...rejects].map((v) => JSON.parse(v) as ErrorRecord);
    const items = await this.itemsOf(batchId, cancelled);
    cancelled.forEach((cid, i) => {
      all.push({
        line: items[i]?.line ?? null,
        custom_id: cid,
        error: { code: 'cancelled', message: `custom_id "${cid}" was cancelled before it ran (batch ${batchId} was cancelled)` },
      });
    });
    return all.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  }

  /**
   * The errors found while the input was read: rejected lines and requests that failed validation
   * (never sent to a queue), by line, at most `limit`.
   */
  async inputErrors(batchId: string, limit = 1000): Promise<ErrorRecord[]> {
    const k = this.keys.batch(batchId);
    const [errs, rejects] = await Promise.all([this.redis.hgetall(k.errors), this.redis.hvals(k.rejects)]);
    const cids = Object.keys(errs);
    const items = await this.itemsOf(batchId, cids);
    const invalid = cids.filter((_, i) => items[i] !== null && items[i]!.key === null).map((cid) => JSON.parse(errs[cid]) as ErrorRecord);
    const all = [...invalid, ...rejects.map((v) => JSON.parse(v) as ErrorRecord)];
    return all.sort((a, b) => (a.line ?? 0) - (b.line ?? 0)).slice(0, limit);
  }

  /** One request's result or error, if settled. */
  async settlement(batchId: string, customId: string): Promise<{ result: ResultRecord } | { error: ErrorRecord } | null> {
    const k = this.keys.batch(batchId);
    const [r, e] = await this.redis
      .pipeline()
      .hget(k.results, customId)
      .hget(k.errors, customId)
      .exec()
      .then((o) => (o ?? []).map(([, v]) => v as string | null));
    if (r) return { result: JSON.parse(r) as ResultRecord };
    if (e) return { error: JSON.parse(e) as ErrorRecord };
    return null;
  }

  /** Batch ids, newest first (ids whose records expired are dropped from the index). */
  async list(limit = 100): Promise<string[]> {
    const ids = await this.redis.zrevrange(this.keys.batches(), 0, limit - 1);
    const st = await this.statuses(ids);
    const gone = ids.filter((_, i) => st[i] === null);
    if (gone.length) await this.redis.zrem(this.keys.batches(), ...gone);
    return ids.filter((_, i) => st[i] !== null);
  }
}
