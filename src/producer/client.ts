import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { BatchStore, type BatchRecord } from '../shared/batch-store.js';
import { BatchgenError } from '../shared/errors.js';
import { checkBatchId, jobIdOf, Keyspace, type KeyspaceOptions, QUEUE_EVENTS_MAX_LEN } from '../shared/keys.js';
import { loadModelInfo, type ModelInfo } from '../model/info.js';
import type { ModelSpec } from '../shared/models.js';
import { OPENAI_CHAT_COMPLETIONS_URL } from '../shared/openai-chat.js';
import {
  formatResultLine,
  nativeResultFields,
  type NativeResultLine,
  type OpenAIChatCompletion,
  type OpenAIChatResultLine,
} from '../shared/output.js';
import type { ResultRecord } from '../shared/schemas.js';
import { asRedisError, connectRedis, redactUrl, redisUrlFrom } from '../shared/redis.js';
import type { RedisTlsFiles } from '../shared/redis-tls.js';
import { isOutOfMemory, Outage } from '../shared/outage.js';
import { retryDelayMs } from './outage-policy.js';
import { parseRequestLine, parseRequestValue } from '../shared/requests.js';
import { componentLogger, type Logger } from '../observability/logger.js';
import type { BucketPolicies } from './prepare.js';
import type { NumberedLine } from './jsonl.js';
import { BatchHandle } from './batch-handle.js';
import { type MetaLine, rejectedLine, Submission, type SubmissionContext, type SubmitOptions, withMeta } from './submission.js';

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
      q = new Queue(ref.bullName, {
        connection: this.redis,
        prefix: ref.bullPrefix,
        streams: { events: { maxLen: QUEUE_EVENTS_MAX_LEN } },
      });
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

  private submissionContext(): SubmissionContext {
    return {
      store: this.store,
      keys: this.keys,
      redis: this.redis,
      models: this.models,
      opts: this.opts,
      log: this.log,
      io: (fn) => this.io(fn),
      queue: (keyId) => this.queue(keyId),
    };
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
    const report = await new Submission(this.submissionContext()).run(parsed(), opts);
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
    const report = await new Submission(this.submissionContext()).run(parsed(), opts);
    return new BatchHandle(this, report.batchId, report);
  }

  /**
   * Enqueues one request (native form; custom_id optional) and awaits its result.
   * @throws BatchgenError with the request's own error code when it fails validation or generation
   *   (`invalid_request`, `unknown_model`, `context_length_exceeded`, ...); `generation_failed` on timeout
   */
  async generate(request: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<GenerateResult> {
    const { result } = await this.one({ custom_id: 'r0', ...request }, opts);
    return { ...nativeResultFields(result), seed: result.seed };
  }

  /**
   * Enqueues one chat request, the body of an OpenAI `/v1/chat/completions` request (`model`,
   * `messages`, `max_completion_tokens`, `temperature`, ...: OpenAI's meaning, as a batch line's),
   * and awaits its `chat.completion`. The model's chat template renders the messages.
   * @throws BatchgenError as generate() does; `invalid_request` when the model has no chat template
   */
  async chat(body: Record<string, unknown>, opts: { timeoutMs?: number } = {}): Promise<OpenAIChatCompletion> {
    const { result, batchId } = await this.one({ custom_id: 'r0', method: 'POST', url: OPENAI_CHAT_COMPLETIONS_URL, body }, opts);
    return (formatResultLine(result, batchId) as OpenAIChatResultLine).response.body;
  }

  /** Submits one request as a batch of its own and awaits its result record. */
  private async one(req: Record<string, unknown>, opts: { timeoutMs?: number }): Promise<{ result: ResultRecord; batchId: string }> {
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
      if (s && 'result' in s) return { result: s.result, batchId: handle.id };
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
