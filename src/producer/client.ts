/**
 * The producer SDK. `GenerationClient.connect()` fails fast with `redis_unavailable` when Redis is
 * down; `generate()` enqueues one request and awaits its result; `submitBatch()` validates,
 * tokenizes and enqueues a batch and returns a handle (status, results, wait, cancel).
 *
 * Jobs get `jobId = <batchId>/<customId>` and every request is recorded once in the batch's record,
 * with a fingerprint of its content: submitting the same batch again enqueues nothing for requests
 * that are queued or done, and a custom_id resubmitted with other content is an
 * `idempotency_conflict` for its line. Nothing is written to Redis before the first line is read.
 */
import { groupBy } from '../shared/group-by.js';
import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  BatchStore,
  DEFAULT_RETENTION_S,
  FINISHED_STATUSES,
  type BatchRecord,
  type RegisterEntry,
  type Settled,
} from '../shared/batch-store.js';
import { parseKeyId } from '../shared/compile-key.js';
import { BatchgenError } from '../shared/errors.js';
import { checkBatchId, jobIdOf, Keyspace, type KeyspaceOptions } from '../shared/keys.js';
import { loadModelInfo, type ModelInfo } from '../model/info.js';
import type { ModelSpec } from '../shared/models.js';
import { nativeResultFields, type NativeResultLine } from '../shared/output.js';
import { asRedisError, connectRedis, redactUrl, redisUrlFrom } from '../shared/redis.js';
import type { RedisTlsFiles } from '../shared/redis-tls.js';
import { isOutOfMemory, Outage } from '../shared/outage.js';
import { retryDelayMs } from './outage-policy.js';
import { lineTooLong, parseRequestLine, parseRequestValue, tooManyLines, type ParsedLine } from '../shared/requests.js';
import {
  errorRecord,
  type BatchStatus,
  type ErrorRecord,
  type JobPayload,
  type RequestForm,
  type ResultRecord,
} from '../shared/schemas.js';
import { componentLogger, type Logger } from '../observability/logger.js';
import { DEFAULT_POLICIES, prepareRequest, type BucketPolicies } from './prepare.js';
import { batchHealth } from './health.js';
import type { KeyDiagnosis } from '../shared/key-health.js';
import type { NumberedLine } from './jsonl.js';

/** A line the reader did not read (too long, or past the lines a batch may have). */
const rejectedLine = (l: NumberedLine): ParsedLine =>
  l.rejected === 'too_many' ? tooManyLines(l.line) : lineTooLong(l.line, l.bytes ?? 0);
import { requestEndpointOf, requestFingerprint, requestFormOf } from './request-identity.js';

export interface GenerationClientOptions extends KeyspaceOptions {
  /**
   * Redis URL (`redis://` or `rediss://`, with user and password when Redis asks for them).
   * @defaultValue REDIS_URL, else `redis://127.0.0.1:6379`
   */
  redisUrl?: string;
  /**
   * The models requests may name (their folders give the tokenizer and the limits).
   * @defaultValue none: every request then fails with `unknown_model`
   */
  models?: ModelSpec[];
  /**
   * Bucket policies for prompt lengths and max_new_tokens.
   * @defaultValue powers of two from 16, for both
   */
  buckets?: BucketPolicies;
  /**
   * Attempts per job; transient failures are retried with exponential backoff.
   * @defaultValue 3
   */
  attempts?: number;
  /**
   * First retry delay in ms (doubled at each attempt).
   * @defaultValue 1000
   */
  backoffMs?: number;
  /**
   * How long a finished batch is kept, in seconds.
   * @defaultValue 7 days (`DEFAULT_RETENTION_S`); 1 hour for `generate()`
   */
  retentionS?: number;
  /**
   * Requests validated and enqueued per round trip.
   * @defaultValue 500
   */
  chunkSize?: number;
  /**
   * How long connecting to Redis may take, in ms.
   * @defaultValue 5000
   */
  connectTimeoutMs?: number;
  /**
   * CA and client certificate files for a `rediss://` URL.
   * @defaultValue BATCHGEN_REDIS_CA, BATCHGEN_REDIS_CERT, BATCHGEN_REDIS_KEY
   */
  redisTls?: RedisTlsFiles;
  /**
   * How long `wait()`, `status()` and `results()`/`settled()` of a handle keep retrying while Redis
   * is unreachable (a restart, a failover), with backoff, before they fail with `redis_unavailable`.
   * 0: fail at once.
   * @defaultValue 300000 (5 minutes)
   */
  outageLimitMs?: number;
  /**
   * Told once when an outage begins and once when it ends.
   * @defaultValue a warning in the log for each
   */
  onOutage?: (e: OutageEvent) => void;
  /**
   * @defaultValue a child of the root pino logger, component `producer`
   */
  logger?: Logger;
}

/** An outage ridden out by a reading call: its start (with the error), then its end (with its length). */
export type OutageEvent = { state: 'down'; url: string; error: string; limitMs: number } | { state: 'up'; url: string; downMs: number };

/** Default of GenerationClientOptions.outageLimitMs. */
export const DEFAULT_OUTAGE_LIMIT_MS = 300_000;

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

/** How far a cancel is: requests looked at and jobs removed, of the batch's total. */
export interface CancelProgress {
  scanned: number;
  removed: number;
  total: number;
}

/** What `generate()` returns: a native result line, with the seed always told (the one used, or drawn). */
export interface GenerateResult extends Omit<NativeResultLine, 'error' | 'seed'> {
  seed: number;
}

export interface WaitOptions {
  /** Called whenever the counts or the status change. */
  onProgress?: (r: BatchRecord) => void;
  /**
   * Polling interval in ms.
   * @defaultValue 200
   */
  pollMs?: number;
  /**
   * Give up after this many ms, with a BatchgenError `generation_failed` (the batch goes on).
   * @defaultValue never
   */
  timeoutMs?: number;
}

/** A finished batch (completed, cancelled or failed): it changes no more. */
export const isTerminal = (s: BatchStatus): boolean => FINISHED_STATUSES.includes(s);

export function newBatchId(): string {
  return `batch_${randomBytes(12).toString('hex')}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The producer SDK: validates, tokenizes and enqueues requests on the queues of their compile keys,
 * and reads batches back. One Redis connection; `close()` when done.
 *
 * Every failure a caller can see is a BatchgenError with a stable `code`.
 */
export class GenerationClient {
  readonly keys: Keyspace;
  readonly store: BatchStore;
  private readonly queues = new Map<string, Queue>();
  private readonly log: Logger;
  private readonly url: string;
  private closing: Promise<void> | null = null;
  private readonly outage = new Outage();

  private constructor(
    readonly redis: Redis,
    private readonly models: Map<string, ModelInfo>,
    private readonly opts: GenerationClientOptions,
  ) {
    this.url = redisUrlFrom(opts.redisUrl);
    this.keys = new Keyspace(opts);
    this.store = new BatchStore(redis, this.keys);
    this.log = opts.logger ?? componentLogger('producer');
  }

  /**
   * Loads the model folders (tokenizers, limits) and connects.
   * @throws BatchgenError `redis_unavailable` when Redis cannot be reached in `connectTimeoutMs`;
   *   `model_format` when a model folder cannot be read; `invalid_request` for a bad option
   */
  static async connect(opts: GenerationClientOptions = {}): Promise<GenerationClient> {
    for (const [name, v] of Object.entries({ attempts: opts.attempts, chunkSize: opts.chunkSize })) {
      if (v !== undefined && !(Number.isInteger(v) && v >= 1))
        throw new BatchgenError('invalid_request', `${name} must be a positive integer, got ${v}`);
    }
    const models = new Map<string, ModelInfo>();
    for (const spec of opts.models ?? []) models.set(spec.name, await loadModelInfo(spec));
    const redis = await connectRedis({
      url: opts.redisUrl,
      role: 'client',
      connectTimeoutMs: opts.connectTimeoutMs,
      name: 'batchgen-producer',
      tls: opts.redisTls,
    });
    redis.on('error', () => {}); // failures surface as rejected calls (redis_unavailable)
    return new GenerationClient(redis, models, opts);
  }

  private queue(keyId: string): Queue {
    let q = this.queues.get(keyId);
    if (!q) {
      const ref = this.keys.queue(keyId);
      q = new Queue(ref.bullName, { connection: this.redis, prefix: ref.bullPrefix });
      q.on('error', () => {});
      this.queues.set(keyId, q);
    }
    return q;
  }

  /** Runs a Redis-touching call, turning connection failures into `redis_unavailable`. */
  io<T>(fn: () => Promise<T>): Promise<T> {
    return fn().catch((e: unknown) => {
      throw asRedisError(e, this.url);
    });
  }

  /**
   * Like io(), for calls that may run again (reads, and writes that are idempotent): while Redis is
   * unreachable the call is retried with backoff, for up to `outageLimitMs`; the outage is told once
   * (onOutage, else the log) and so is its end.
   */
  async patient<T>(fn: () => Promise<T>): Promise<T> {
    const limitMs = this.opts.outageLimitMs ?? DEFAULT_OUTAGE_LIMIT_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        const v = await this.io(fn);
        const downMs = this.outage.end(Date.now());
        if (downMs !== null) this.tell({ state: 'up', url: redactUrl(this.url), downMs });
        return v;
      } catch (e) {
        if (!(e instanceof BatchgenError) || e.code !== 'redis_unavailable') throw e;
        const now = Date.now();
        if (this.outage.begin(now, e.message)) this.tell({ state: 'down', url: redactUrl(this.url), error: e.message, limitMs });
        const since = this.outage.downSince ?? now;
        if (now - since >= limitMs) {
          this.outage.end(now);
          throw new BatchgenError(
            'redis_unavailable',
            `${e.message} (still unavailable after ${Math.round((now - since) / 1000)} s of retrying)`,
          );
        }
        await sleep(Math.min(retryDelayMs(attempt), Math.max(0, since + limitMs - now)));
      }
    }
  }

  private tell(e: OutageEvent): void {
    if (this.opts.onOutage) this.opts.onOutage(e);
    else if (e.state === 'down')
      this.log.warn({ redis: e.url, err: e.error, limitMs: e.limitMs }, 'Redis unavailable: retrying until it is back');
    else this.log.warn({ redis: e.url, downMs: e.downMs }, 'Redis available again');
  }

  /** Submits request objects (either JSONL form, already parsed); they are numbered from 1 in order. */
  async submitBatch(requests: Iterable<unknown> | AsyncIterable<unknown>, opts: SubmitOptions = {}): Promise<BatchHandle> {
    async function* parsed(): AsyncGenerator<MetaLine> {
      let line = 0;
      for await (const r of requests as AsyncIterable<unknown>) {
        line += 1;
        yield withMeta(parseRequestValue(r, line), r);
      }
    }
    const report = await this.submitParsed(parsed(), opts);
    return new BatchHandle(this, report.batchId, report);
  }

  /** Submits JSONL lines (numbered as in their file). */
  async submitLines(lines: Iterable<NumberedLine> | AsyncIterable<NumberedLine>, opts: SubmitOptions = {}): Promise<BatchHandle> {
    async function* parsed(): AsyncGenerator<MetaLine> {
      for await (const l of lines as AsyncIterable<NumberedLine>) {
        const p = l.rejected ? rejectedLine(l) : parseRequestLine(l.text, l.line);
        yield withMeta(p, p.ok || p.counted ? JSON.parse(l.text) : null);
      }
    }
    const report = await this.submitParsed(parsed(), opts);
    return new BatchHandle(this, report.batchId, report);
  }

  private async submitParsed(lines: AsyncIterable<MetaLine>, opts: SubmitOptions): Promise<SubmitReport> {
    const batchId = checkBatchId(opts.batchId ?? newBatchId());
    const chunkSize = this.opts.chunkSize ?? 500;
    // the first line is read before anything is written: a missing or empty input leaves no record
    const it = lines[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done) throw new BatchgenError('empty_input', `batch ${batchId}: no request lines (the input is empty or blank)`);
    const begun = await this.io(() =>
      this.store.begin(batchId, { retentionS: opts.retentionS ?? this.opts.retentionS ?? DEFAULT_RETENTION_S, input: opts.input }),
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
    if (!finished) await this.io(() => this.store.reject(batchId, rejects));
    report.status = await this.io(() => this.store.endSubmit(batchId));
    report.keys = [...keysUsed].sort();
    this.log.info(
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
        const model = this.models.get(req.model);
        if (!model) {
          const known = [...this.models.keys()];
          return fail(
            'unknown_model',
            `model "${req.model}" is not known to this producer (known: ${known.length ? known.join(', ') : 'none; pass --model NAME=DIR'})`,
          );
        }
        try {
          const prep = await prepareRequest(req, model, this.opts.buckets ?? DEFAULT_POLICIES);
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
    const outcomes = await this.io(() =>
      this.store.register(
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
    const attempts = this.opts.attempts ?? 3;
    const backoff = { type: 'exponential', delay: this.opts.backoffMs ?? 1000 };
    for (const [keyId, payloads] of byKey) {
      await this.io(() =>
        this.queue(keyId).addBulk(
          payloads.map((data) => ({
            name: 'gen',
            data,
            opts: { jobId: jobIdOf(batchId, data.custom_id), attempts, backoff, removeOnComplete: true, removeOnFail: true },
          })),
        ),
      );
      // the autoscaler reads arrival rates from this counter's deltas
      await this.io(() => this.redis.incrby(this.keys.arrivals(keyId), payloads.length));
      progress.enqueued += payloads.length;
      keysUsed.add(keyId);
    }
    report.enqueued += enqueuedNew;
    if (byKey.size > 0) {
      const fields: string[] = [];
      for (const k of byKey.keys()) fields.push(k, JSON.stringify({ ...parseKeyId(k), updated_at: now }));
      await this.io(() => this.redis.hset(this.keys.registry(), ...fields));
    }
  }

  /**
   * Enqueues one request (native form; custom_id optional) and awaits its result.
   * @throws BatchgenError with the request's own error code when it fails validation or generation
   *   (`invalid_request`, `unknown_model`, `context_length_exceeded`, ...); `generation_failed` on timeout
   */
  async generate(request: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<GenerateResult> {
    const req = { custom_id: 'r0', ...request };
    const handle = await this.submitBatch([req], {
      batchId: `gen_${randomBytes(12).toString('hex')}`,
      retentionS: this.opts.retentionS ?? 3600,
    });
    const err = handle.report?.errors[0];
    if (err) throw new BatchgenError(err.error.code as BatchgenError['code'], err.error.message);
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let delay = 5;
    for (;;) {
      const s = await this.io(() => this.store.settlement(handle.id, req.custom_id as string));
      if (s && 'result' in s) {
        return { ...nativeResultFields(s.result), seed: s.result.seed };
      }
      if (s && 'error' in s) throw new BatchgenError(s.error.error.code as BatchgenError['code'], s.error.error.message);
      if (Date.now() > deadline) throw new BatchgenError('generation_failed', `no result within ${opts.timeoutMs} ms (batch ${handle.id})`);
      await sleep(delay);
      delay = Math.min(delay * 2, 100);
    }
  }

  /** A handle on an existing batch. */
  batch(batchId: string): BatchHandle {
    return new BatchHandle(this, checkBatchId(batchId));
  }

  /**
   * Cancels a batch: waiting jobs are removed, running ones finish. Returns the record after it.
   * The items are walked in chunks of 500 (one HSCAN page, then one remove per job), so a large
   * batch never holds Redis in one long command; `onProgress` follows each chunk.
   */
  async cancel(batchId: string, opts: { onProgress?: (p: CancelProgress) => void } = {}): Promise<BatchRecord> {
    const st = await this.io(() => this.store.requestCancel(batchId)).catch(async (e: unknown) => {
      if (!isOutOfMemory(e)) throw e;
      // Redis is full and refuses the status write: the batch's waiting jobs are removed first (removals
      // are allowed and free memory), then the cancel is asked again; the walk below counts them
      this.log.warn({ batchId }, 'Redis is out of memory: removing the waiting jobs of the batch first, to free memory for the cancel');
      for await (const chunk of this.store.items(batchId)) {
        const queued = chunk.filter(([, item]) => item.key !== null);
        // one by one: each removal frees memory for the next (a removal that Redis still refuses is left to the walk below)
        for (const [cid, item] of queued)
          await this.io(() => this.queue(item.key!).remove(jobIdOf(batchId, cid))).catch((err: unknown) => {
            if (!isOutOfMemory(err)) throw err;
          });
      }
      return this.io(() => this.store.requestCancel(batchId));
    });
    if (st === null) throw new BatchgenError('invalid_request', `batch ${batchId} not found`);
    if (st === 'cancelling') {
      const progress: CancelProgress = { scanned: 0, removed: 0, total: (await this.io(() => this.store.get(batchId)))?.counts.total ?? 0 };
      for await (const chunk of this.store.items(batchId)) {
        const pending = chunk.filter(([, item]) => item.key !== null);
        const settled = await this.io(() =>
          this.store.settled(
            batchId,
            pending.map(([cid]) => cid),
          ),
        );
        const removed: string[] = [];
        await Promise.all(
          pending.map(async ([cid, item], i) => {
            if (settled[i]) return;
            const q = this.queue(item.key!);
            const jobId = jobIdOf(batchId, cid);
            const n = await this.io(() => q.remove(jobId));
            if (n === 1) removed.push(cid);
            else if ((await this.io(() => q.getJobState(jobId))) === 'unknown') removed.push(cid); // never enqueued, or gone: cannot settle any more
          }),
        );
        await this.io(() => this.store.markCancelled(batchId, removed));
        progress.scanned += chunk.length;
        progress.removed += removed.length;
        opts.onProgress?.({ ...progress });
      }
      await this.io(() => this.store.finalize(batchId));
    }
    const rec = await this.io(() => this.store.get(batchId));
    this.log.info({ batchId, status: rec?.status }, 'batch cancel requested');
    return rec!;
  }

  /** Closes queues and the connection; safe to call twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const q of this.queues.values()) await q.close().catch(() => {});
      this.queues.clear();
      this.redis.disconnect();
    })();
    return this.closing;
  }
}

/** How far a submission got: requests recorded in the batch, jobs handed to the queues (for an error that stops it). */
interface SubmitProgress {
  recorded: number;
  enqueued: number;
}

/** A parsed line with what identifies its content (meta is only read for counted lines). */
interface MetaLine {
  parsed: ParsedLine;
  meta: { fp: string; form: RequestForm; endpoint: string };
}

interface Prepared {
  entry: RegisterEntry;
  payload?: JobPayload;
  endpoint: string;
}

function withMeta(parsed: ParsedLine, raw: unknown): MetaLine {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || (!parsed.ok && !parsed.counted))
    return { parsed, meta: { fp: '', form: 'native', endpoint: '' } };
  const obj = raw as Record<string, unknown>;
  return { parsed, meta: { fp: requestFingerprint(obj), form: requestFormOf(obj), endpoint: requestEndpointOf(obj) } };
}

/** A handle on one batch run: its status, results, errors and health, waiting, cancelling. */
export class BatchHandle {
  constructor(
    private readonly client: GenerationClient,
    readonly id: string,
    /** What the submission did (absent for a handle on an existing batch). */
    readonly report?: SubmitReport,
  ) {}

  /** The batch's record; rides out an outage of Redis (outageLimitMs). */
  async status(): Promise<BatchRecord> {
    const r = await this.client.patient(() => this.client.store.get(this.id));
    if (!r) throw new BatchgenError('invalid_request', `batch ${this.id} not found (unknown, or expired after its retention)`);
    return r;
  }

  /** Results in completion order; follows the batch until it is finished. */
  async *results(opts: { pollMs?: number } = {}): AsyncGenerator<ResultRecord> {
    for await (const s of this.settled(opts)) if (s.result) yield s.result;
  }

  /**
   * Settled requests (results and errors) in settlement order, from position `from` of the batch's
   * order list; follows the batch until it is finished. Each settled request comes once.
   */
  async *settled(opts: { pollMs?: number; from?: number } = {}): AsyncGenerator<Settled> {
    let offset = opts.from ?? 0;
    const order = this.client.keys.batch(this.id).order;
    const seen = new Set<string>();
    let atOffset: string | null = null;
    // one page of the order list, read again while Redis is unreachable
    const page = () =>
      this.client.patient(async () => {
        for await (const p of this.client.store.settledFrom(this.id, offset)) return p;
        return null;
      });
    const self = this;
    const drain = async function* (): AsyncGenerator<Settled> {
      // a Redis restart can lose the order list's last writes, which are then written again later in
      // it: when the position before the cursor changed, the list is read again (what came is skipped)
      if (offset > (opts.from ?? 0) && (await self.client.patient(() => self.client.redis.lindex(order, offset - 1))) !== atOffset)
        offset = opts.from ?? 0;
      for (let p = await page(); p !== null && p.next > offset; p = await page()) {
        offset = p.next;
        for (const e of p.entries) {
          if (seen.has(e.custom_id)) continue;
          seen.add(e.custom_id);
          yield e;
        }
      }
      if (offset > 0) atOffset = await self.client.patient(() => self.client.redis.lindex(order, offset - 1));
    };
    for (;;) {
      const rec = await this.status();
      yield* drain();
      // anything written between the status read and the last range
      if (isTerminal(rec.status)) {
        yield* drain();
        return;
      }
      await sleep(opts.pollMs ?? 200);
    }
  }

  /** Per compile key with pending requests: who holds it, or why no worker does (problem keys first; none once finished). */
  health(): Promise<KeyDiagnosis[]> {
    return this.client.io(() => batchHealth(this.client.redis, this.client.keys, this.client.store, this.id));
  }

  /** Failed requests and rejected lines, by line; rides out an outage of Redis. */
  errors(): Promise<ErrorRecord[]> {
    return this.client.patient(() => this.client.store.errors(this.id));
  }

  /** Waits until the batch is completed, cancelled or failed; rides out an outage of Redis (outageLimitMs). */
  async wait(opts: WaitOptions = {}): Promise<BatchRecord> {
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let last = '';
    for (;;) {
      const r = await this.status();
      const sig = `${r.status}:${r.counts.completed}:${r.counts.failed}:${r.counts.cancelled}:${r.counts.total}`;
      if (sig !== last) {
        last = sig;
        opts.onProgress?.(r);
      }
      if (isTerminal(r.status)) return r;
      if (Date.now() > deadline)
        throw new BatchgenError(
          'generation_failed',
          `batch ${this.id} not finished within ${opts.timeoutMs} ms (${r.counts.completed + r.counts.failed}/${r.counts.total} done)`,
        );
      await sleep(opts.pollMs ?? 200);
    }
  }

  cancel(): Promise<BatchRecord> {
    return this.client.cancel(this.id);
  }
}
