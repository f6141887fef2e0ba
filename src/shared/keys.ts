/**
 * Every queue and Redis key name batchgen uses, built in this one module.
 *
 * The queue of a compile key is `<prefix>:gen:<model>:p<P>:n<N>:<strategy>` (readable by people and
 * by a KEDA Redis scaler, if one is used: its waiting list is that name plus `:wait`). BullMQ refuses ':' in a queue name, so the
 * name is split at its last ':' into BullMQ's `prefix` (`<prefix>:gen:<model>:p<P>:n<N>`) and queue
 * name (`<strategy>`); BullMQ joins them back into exactly the name above.
 *
 * With `hashTag: true` the prefix is written `{prefix}`: every key then hashes to one Redis Cluster
 * slot, as BullMQ's Lua scripts and ours need.
 */
import { basename, resolve } from 'node:path';
import { BatchgenError } from './errors.js';
import { parseKeyId, keyId, type CompileKey } from './compile-key.js';

export interface KeyspaceOptions {
  /** The first part of every key. Default `batchgen` (or `BATCHGEN_PREFIX`). */
  prefix?: string;
  /** Wrap the prefix in a Redis Cluster hash tag, `{prefix}`. Default false. */
  hashTag?: boolean;
}

/** How BullMQ is told about one key's queue. */
export interface QueueRef {
  /** The full queue name, `<prefix>:gen:<model>:p<P>:n<N>:<strategy>`. */
  name: string;
  /** BullMQ's `prefix` option. */
  bullPrefix: string;
  /** BullMQ's queue name. */
  bullName: string;
  /** BullMQ's list of waiting jobs (what a KEDA Redis scaler would read; the shipped setup scales on the autoscaler's /scale). */
  waitList: string;
  /** BullMQ's sorted set of delayed jobs (retries waiting for their backoff). */
  delayedSet: string;
  /** BullMQ's list of jobs being processed. */
  activeList: string;
  /** BullMQ's sorted set of waiting jobs added with a priority. */
  prioritizedSet: string;
  /** BullMQ's hash of one job of this queue (fields `timestamp`, `data`, ...). */
  job(jobId: string): string;
}

/** The Redis keys of one batch run. */
export interface BatchKeys {
  /** hash: status, counts, timestamps, settings */
  record: string;
  /** hash: custom_id → item (line, queue) for every accepted request */
  items: string;
  /** hash: custom_id → result record (one per custom_id, whatever the deliveries) */
  results: string;
  /** hash: custom_id → error record of a request that failed (validation or generation) */
  errors: string;
  /** hash: line → error record of a line that is not a request (bad JSON, no custom_id, duplicate) */
  rejects: string;
  /** set: custom_ids removed by a cancel before they ran */
  cancelled: string;
  /** list: custom_ids in completion order */
  order: string;
}

const PREFIX_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const HASH_TAGGED_RE = /^\{[A-Za-z0-9_.:-]{1,64}\}$/;
/** Model names: no ':' (it separates the parts of a queue name), no '/' or leading '.' (never a path). */
export const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** Batch ids: no ':' and no '/' (they build job ids and key names). */
export const BATCH_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Worker ids that name a key (assignment sets): no ':', no '*', no spaces. */
export const WORKER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkModelName(name: string): string {
  if (!MODEL_NAME_RE.test(name)) {
    throw new BatchgenError(
      'invalid_request',
      `model name "${name}": expected letters, digits, '.', '_' or '-' (at most 64, not starting with '.'), never a path`,
    );
  }
  return name;
}

/**
 * The model name a bare folder gets when none is given (`/m/gpt2 small` → `gpt2-small`): its base
 * name with what a name may not hold replaced by '-', or `model` when nothing usable is left.
 */
export function modelNameForFolder(dir: string): string {
  const name = basename(resolve(dir))
    .replace(/[^A-Za-z0-9_.-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 64);
  return MODEL_NAME_RE.test(name) ? name : 'model';
}

/**
 * The length BullMQ caps each queue's event stream at. batchgen reads no queue events (results and
 * progress live in the batch records), so the stream is kept short: at BullMQ's default of 10,000
 * entries an idle compile key keeps about 1 MB of events in Redis.
 */
export const QUEUE_EVENTS_MAX_LEN = 200;

export function checkBatchId(id: string): string {
  if (!BATCH_ID_RE.test(id)) {
    throw new BatchgenError('invalid_request', `batch id "${id}": expected letters, digits, '.', '_' or '-' (at most 128)`);
  }
  return id;
}

/**
 * The job id of one request: `<batchId>/<customId>` (BullMQ refuses ':' in custom job ids, hence
 * '/'). '%' and ':' inside the custom_id are
 * percent-encoded, so the id is unambiguous and BullMQ accepts any custom_id.
 */
export function jobIdOf(batchId: string, customId: string): string {
  return `${batchId}/${customId.replace(/%/g, '%25').replace(/:/g, '%3A')}`;
}

/** The inverse of jobIdOf. */
export function parseJobId(jobId: string): { batchId: string; customId: string } {
  const i = jobId.indexOf('/');
  if (i < 1) throw new BatchgenError('invalid_payload', `job id "${jobId}": expected <batchId>/<customId>`);
  return {
    batchId: jobId.slice(0, i),
    customId: jobId
      .slice(i + 1)
      .replace(/%3A/g, ':')
      .replace(/%25/g, '%'),
  };
}

export function checkWorkerId(id: string): string {
  if (!WORKER_ID_RE.test(id)) {
    throw new BatchgenError('invalid_request', `worker id "${id}": expected letters, digits, '.', '_' or '-' (at most 128)`);
  }
  return id;
}

export class Keyspace {
  /** The prefix as written in keys (with its braces when hash-tagged). */
  readonly prefix: string;

  constructor(opts: KeyspaceOptions = {}) {
    const raw = opts.prefix ?? process.env.BATCHGEN_PREFIX ?? 'batchgen';
    if (!PREFIX_RE.test(raw) && !HASH_TAGGED_RE.test(raw)) {
      throw new BatchgenError(
        'invalid_request',
        `key prefix "${raw}": expected 1 to 64 of letters, digits, '_', '.', ':' or '-', optionally in {braces}`,
      );
    }
    this.prefix = opts.hashTag && !HASH_TAGGED_RE.test(raw) ? `{${raw}}` : raw;
  }

  /** The queue of a compile key. */
  queue(key: CompileKey | string): QueueRef {
    const k = typeof key === 'string' ? parseKeyId(key) : key;
    checkModelName(k.model);
    const bullPrefix = `${this.prefix}:gen:${k.model}:p${k.P}:n${k.N}`;
    const name = `${bullPrefix}:${k.strategy}`;
    return {
      name,
      bullPrefix,
      bullName: k.strategy,
      waitList: `${name}:wait`,
      delayedSet: `${name}:delayed`,
      activeList: `${name}:active`,
      prioritizedSet: `${name}:prioritized`,
      job: (jobId: string) => `${name}:${jobId}`,
    };
  }

  /** The compile key of a queue name built by queue() (null when the name is not one). */
  keyOfQueue(name: string): CompileKey | null {
    const head = `${this.prefix}:gen:`;
    if (!name.startsWith(head)) return null;
    try {
      return parseKeyId(name.slice(head.length));
    } catch {
      return null;
    }
  }

  /** hash: compile key id (`model:pP:nN:strategy`) → JSON {model, P, N, strategy, updated_at}: the keys that have had work. */
  registry(): string {
    return `${this.prefix}:registry`;
  }

  /** sorted set: batch id → created_at (ms) of every batch run still kept. */
  batches(): string {
    return `${this.prefix}:batches`;
  }

  batch(id: string): BatchKeys {
    checkBatchId(id);
    const b = `${this.prefix}:batch:${id}`;
    return {
      record: b,
      items: `${b}:items`,
      results: `${b}:results`,
      errors: `${b}:errors`,
      rejects: `${b}:rejects`,
      cancelled: `${b}:cancelled`,
      order: `${b}:order`,
    };
  }

  /** hash with a TTL: one worker's heartbeat (keys held, compiles, retraces, counters). */
  worker(id: string): string {
    return `${this.prefix}:worker:${id}`;
  }

  /** A pattern matching every worker heartbeat (for SCAN). */
  workersPattern(): string {
    return `${this.prefix}:worker:*`;
  }

  /** set: the compile key ids the autoscaler assigns to one worker (read by `worker --assigned`). */
  assignment(workerId: string): string {
    return `${this.prefix}:assign:${checkWorkerId(workerId)}`;
  }

  /** A pattern matching every assignment set (for SCAN). */
  assignmentsPattern(): string {
    return `${this.prefix}:assign:*`;
  }

  /** The worker id of an assignment set's name (null when the name is not one). */
  workerOfAssignment(name: string): string | null {
    const head = `${this.prefix}:assign:`;
    if (!name.startsWith(head)) return null;
    const id = name.slice(head.length);
    return WORKER_ID_RE.test(id) ? id : null;
  }

  /** counter: jobs ever enqueued on a compile key (INCRBY by producers; rates come from deltas). */
  arrivals(key: CompileKey | string): string {
    const id = typeof key === 'string' ? keyId(parseKeyId(key)) : keyId(key);
    return `${this.prefix}:arrivals:${id}`;
  }
}

export { keyId };
