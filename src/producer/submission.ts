/**
 * One submission of lines to a batch run: dedupe by custom_id, validate and tokenize in chunks,
 * record each request once in the batch (with a fingerprint of its content), enqueue the jobs
 * that need it on their compile keys' queues, and count what happened. A chunk's Redis writes
 * overlap the validation of the next.
 */
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ModelInfo } from '../model/info.js';
import type { Logger } from '../observability/logger.js';
import { type BatchStore, DEFAULT_RETENTION_S, FINISHED_STATUSES, type RegisterEntry } from '../shared/batch-store.js';
import { parseKeyId } from '../shared/compile-key.js';
import { BatchgenError } from '../shared/errors.js';
import { groupBy } from '../shared/group-by.js';
import { checkBatchId, jobIdOf, type Keyspace } from '../shared/keys.js';
import { isOutOfMemory } from '../shared/outage.js';
import { lineTooLong, tooManyLines, type ParsedLine } from '../shared/requests.js';
import { type BatchStatus, type ErrorRecord, errorRecord, type JobPayload, type RequestForm } from '../shared/schemas.js';
import type { NumberedLine } from './jsonl.js';
import { DEFAULT_POLICIES, type BucketPolicies, prepareRequest } from './prepare.js';
import { requestEndpointOf, requestFingerprint, requestFormOf } from './request-identity.js';
import { randomBytes } from 'node:crypto';

export function newBatchId(): string {
  return `batch_${randomBytes(12).toString('hex')}`;
}

export interface SubmitOptions {
  /**
   * The batch id (letters, digits, '.', '_', '-'); submitting again under the same id resumes it.
   * @defaultValue a new random id (`newBatchId()`)
   */
  batchId?: string;
  /** Where the requests came from, recorded for people (a file name). */
  input?: string;
  /**
   * How long this batch is kept once finished, in seconds.
   * @defaultValue the client's `retentionS`
   */
  retentionS?: number;
}

/**
 * What a submission did. Each counted request is in exactly one of enqueued, alreadyPresent,
 * failedValidation, conflicts and refused; rejectedLines are lines that are not requests.
 */
export interface SubmitReport {
  batchId: string;
  /** requests counted in this submission (JSON objects with a custom_id, once each) */
  requests: number;
  /** new requests whose jobs were handed to the queues now */
  enqueued: number;
  /** requests the batch already had with the same content (queued, done or failed): nothing new for them */
  alreadyPresent: number;
  /** new requests that failed validation (stored as failed) */
  failedValidation: number;
  /** requests whose custom_id the batch holds with other content (idempotency_conflict; nothing stored) */
  conflicts: number;
  /** new requests refused because the batch is finished (batch_finished; nothing stored) */
  refused: number;
  /** lines that are not requests (bad JSON, no custom_id, a custom_id repeated in the input) */
  rejectedLines: number;
  /** every line-level error of this submission: failed validation, conflicts, refusals, rejected lines */
  errors: ErrorRecord[];
  /** compile keys that received jobs */
  keys: string[];
  status: BatchStatus;
}

/** What a submission needs of its client. */
export interface SubmissionContext {
  store: BatchStore;
  keys: Keyspace;
  redis: Redis;
  models: Map<string, ModelInfo>;
  opts: { chunkSize?: number; retentionS?: number; attempts?: number; backoffMs?: number; buckets?: BucketPolicies };
  log: Logger;
  /** runs a Redis-touching call, turning connection failures into `redis_unavailable` */
  io<T>(fn: () => Promise<T>): Promise<T>;
  /** the BullMQ queue of a compile key */
  queue(keyId: string): Queue;
}

/** A line the reader did not read (too long, or past the lines a batch may have). */
export const rejectedLine = (l: NumberedLine): ParsedLine =>
  l.rejected === 'too_many' ? tooManyLines(l.line) : lineTooLong(l.line, l.bytes ?? 0);
/** How far a submission got: requests recorded in the batch, jobs handed to the queues (for an error that stops it). */
interface SubmitProgress {
  recorded: number;
  enqueued: number;
}

/** A parsed line with what identifies its content (meta is only read for counted lines). */
export interface MetaLine {
  parsed: ParsedLine;
  meta: { fp: string; form: RequestForm; endpoint: string };
}

interface Prepared {
  entry: RegisterEntry;
  payload?: JobPayload;
  endpoint: string;
}

export function withMeta(parsed: ParsedLine, raw: unknown): MetaLine {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || (!parsed.ok && !parsed.counted))
    return { parsed, meta: { fp: '', form: 'native', endpoint: '' } };
  const obj = raw as Record<string, unknown>;
  return { parsed, meta: { fp: requestFingerprint(obj), form: requestFormOf(obj), endpoint: requestEndpointOf(obj) } };
}

export class Submission {
  constructor(private readonly ctx: SubmissionContext) {}

  /** Records and enqueues the lines; the first line is read before anything is written. */
  async run(lines: AsyncIterable<MetaLine>, opts: SubmitOptions): Promise<SubmitReport> {
    const batchId = checkBatchId(opts.batchId ?? newBatchId());
    const chunkSize = this.ctx.opts.chunkSize ?? 500;
    // the first line is read before anything is written: a missing or empty input leaves no record
    const it = lines[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done) throw new BatchgenError('empty_input', `batch ${batchId}: no request lines (the input is empty or blank)`);
    const begun = await this.ctx.io(() =>
      this.ctx.store.begin(batchId, { retentionS: opts.retentionS ?? this.ctx.opts.retentionS ?? DEFAULT_RETENTION_S, input: opts.input }),
    );
    const finished = FINISHED_STATUSES.includes(begun);
    const seen = new Set<string>();
    const rejects: ErrorRecord[] = [];
    const report: SubmitReport = {
      batchId,
      requests: 0,
      enqueued: 0,
      alreadyPresent: 0,
      failedValidation: 0,
      conflicts: 0,
      refused: 0,
      rejectedLines: 0,
      errors: [],
      keys: [],
      status: begun,
    };
    const keysUsed = new Set<string>();
    let chunk: MetaLine[] = [];
    // one chunk's Redis writes overlap the validation and tokenization of the next
    let inflight: Promise<void> = Promise.resolve();
    const flush = async () => {
      const c = chunk;
      chunk = [];
      if (c.length === 0) return;
      const prepared = await this.prepareChunk(batchId, c);
      const prev = inflight;
      inflight = prev.then(() => this.enqueueChunk(batchId, prepared, report, keysUsed, begun, progress));
      inflight.catch(() => {}); // awaited below; this only marks the rejection as handled meanwhile
      await prev;
    };
    const all = async function* (): AsyncGenerator<MetaLine> {
      yield first.value;
      for (let n = await it.next(); !n.done; n = await it.next()) yield n.value;
    };
    const progress: SubmitProgress = { recorded: 0, enqueued: 0 };
    try {
      for await (const ml of all()) {
        const p = ml.parsed;
        if (!p.ok && !p.counted) {
          rejects.push(p.error);
          report.errors.push(p.error);
          continue;
        }
        const cid = p.ok ? p.request.custom_id : p.error.custom_id!;
        const line = p.ok ? p.line : p.error.line;
        if (seen.has(cid)) {
          const dup = errorRecord(line, cid, 'duplicate_custom_id', `line ${line}: custom_id "${cid}" was already used in this batch`);
          rejects.push(dup);
          report.errors.push(dup);
          continue;
        }
        seen.add(cid);
        report.requests += 1;
        chunk.push(ml);
        if (chunk.length >= chunkSize) await flush();
      }
      await flush();
      await inflight;
    } catch (e) {
      if (!isOutOfMemory(e)) throw e;
      throw new BatchgenError(
        'redis_out_of_memory',
        `Redis is out of memory (maxmemory reached, and noeviction refuses writes): batch ${batchId} stopped after ` +
          `${progress.recorded} of the ${report.requests} requests read so far were recorded in it and ${progress.enqueued} enqueued; ` +
          `it stays validating. Free memory (delete old batches) or raise maxmemory, then submit the same input with --batch-id ${batchId}: ` +
          `what is recorded is not recorded twice, and the rest is enqueued (Redis said: ${(e as Error).message.split('\n')[0]})`,
      );
    }
    report.rejectedLines = rejects.length;
    report.errors.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    if (!finished) await this.ctx.io(() => this.ctx.store.reject(batchId, rejects));
    report.status = await this.ctx.io(() => this.ctx.store.endSubmit(batchId));
    report.keys = [...keysUsed].sort();
    this.ctx.log.info(
      {
        batchId,
        requests: report.requests,
        enqueued: report.enqueued,
        alreadyPresent: report.alreadyPresent,
        failedValidation: report.failedValidation,
        conflicts: report.conflicts,
        refused: report.refused,
        rejectedLines: report.rejectedLines,
        status: report.status,
      },
      'batch submitted',
    );
    return report;
  }

  /** Validates, tokenizes and prepares the jobs of a chunk. */
  private async prepareChunk(batchId: string, chunk: MetaLine[]): Promise<Prepared[]> {
    const now = Date.now();
    return Promise.all(
      chunk.map(async ({ parsed: p, meta }): Promise<Prepared> => {
        const base = { fp: meta.fp, form: meta.form };
        if (!p.ok)
          return {
            endpoint: meta.endpoint,
            entry: { custom_id: p.error.custom_id!, item: { line: p.error.line ?? 0, key: null, ...base }, kind: 'error', error: p.error },
          };
        const req = p.request;
        const fail = (code: string, message: string): Prepared => {
          const error = errorRecord(p.line, req.custom_id, code, message);
          return {
            endpoint: meta.endpoint,
            entry: { custom_id: req.custom_id, item: { line: p.line, key: null, ...base }, kind: 'error' as const, error },
          };
        };
        const model = this.ctx.models.get(req.model);
        if (!model) {
          const known = [...this.ctx.models.keys()];
          return fail(
            'unknown_model',
            `model "${req.model}" is not known to this producer (known: ${known.length ? known.join(', ') : 'none; pass --model NAME=DIR'})`,
          );
        }
        try {
          const prep = await prepareRequest(req, model, this.ctx.opts.buckets ?? DEFAULT_POLICIES);
          const payload: JobPayload = {
            v: 1,
            batch_id: batchId,
            custom_id: req.custom_id,
            line: p.line,
            form: req.form,
            model: req.model,
            key: prep.keyId,
            prompt_ids: prep.promptIds,
            params: prep.params,
            created_at: now,
          };
          return {
            endpoint: meta.endpoint,
            entry: { custom_id: req.custom_id, item: { line: p.line, key: prep.keyId, ...base }, kind: 'queue' },
            payload,
          };
        } catch (e) {
          if (e instanceof BatchgenError) return fail(e.code, e.message);
          throw e;
        }
      }),
    );
  }

  /** Registers a prepared chunk in the batch record, then enqueues the jobs that need it. */
  private async enqueueChunk(
    batchId: string,
    prepared: Prepared[],
    report: SubmitReport,
    keysUsed: Set<string>,
    begun: BatchStatus,
    progress: SubmitProgress,
  ): Promise<void> {
    const now = Date.now();
    const outcomes = await this.ctx.io(() =>
      this.ctx.store.register(
        batchId,
        prepared.map((p) => p.entry),
        new Set(prepared.map((p) => p.endpoint)),
      ),
    );
    progress.recorded += outcomes.filter((o) => o !== 'conflict' && o !== 'finished').length;
    const toEnqueue: JobPayload[] = [];
    let enqueuedNew = 0;
    prepared.forEach((p, i) => {
      const { custom_id: cid, item } = p.entry;
      const o = outcomes[i];
      if (p.entry.kind === 'error' && o !== 'conflict' && o !== 'finished') report.errors.push(p.entry.error);
      if (o === 'present' || o === 'requeue') report.alreadyPresent += 1;
      else if (o === 'invalid') report.failedValidation += 1;
      else if (o === 'enqueue') enqueuedNew += 1;
      else if (o === 'conflict') {
        report.conflicts += 1;
        report.errors.push(
          errorRecord(
            item.line,
            cid,
            'idempotency_conflict',
            `line ${item.line}: custom_id "${cid}" is already in batch ${batchId} with other content (model, prompt or parameters differ from the stored request); the stored request and its result are kept: use a new custom_id, or another batch id`,
          ),
        );
      } else if (o === 'finished') {
        report.refused += 1;
        report.errors.push(
          errorRecord(
            item.line,
            cid,
            'batch_finished',
            `line ${item.line}: batch ${batchId} is ${begun} and takes no new requests (custom_id "${cid}" is not one of its requests); submit it under another batch id`,
          ),
        );
      }
      if ((o !== 'enqueue' && o !== 'requeue') || !p.payload) return;
      toEnqueue.push(p.payload);
    });
    const byKey = groupBy(toEnqueue, (p) => p.key);
    const attempts = this.ctx.opts.attempts ?? 3;
    const backoff = { type: 'exponential', delay: this.ctx.opts.backoffMs ?? 1000 };
    for (const [keyId, payloads] of byKey) {
      await this.ctx.io(() =>
        this.ctx.queue(keyId).addBulk(
          payloads.map((data) => ({
            name: 'gen',
            data,
            opts: { jobId: jobIdOf(batchId, data.custom_id), attempts, backoff, removeOnComplete: true, removeOnFail: true },
          })),
        ),
      );
      // the autoscaler reads arrival rates from this counter's deltas
      await this.ctx.io(() => this.ctx.redis.incrby(this.ctx.keys.arrivals(keyId), payloads.length));
      progress.enqueued += payloads.length;
      keysUsed.add(keyId);
    }
    report.enqueued += enqueuedNew;
    if (byKey.size > 0) {
      const fields: string[] = [];
      for (const k of byKey.keys()) fields.push(k, JSON.stringify({ ...parseKeyId(k), updated_at: now }));
      await this.ctx.io(() => this.ctx.redis.hset(this.ctx.keys.registry(), ...fields));
    }
  }
}
