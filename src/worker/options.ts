/**
 * A worker's options: what each means and its default, merged once (resolveOptions), with every
 * value checked there. The rest of the worker reads only the resolved options.
 */
import { hostname } from 'node:os';
import { checkWorkerId, type KeyspaceOptions } from '../shared/keys.js';
import type { ModelSpec } from '../shared/models.js';
import { parseKeyId } from '../shared/compile-key.js';
import { checkBatchSizes, DEFAULT_BATCH_SIZES } from '../shared/batch-sizes.js';
import { DEFAULT_VARIANT_BUDGET_BYTES } from '../shared/memory.js';
import { DEFAULT_REGISTRY_TTL_MS } from '../shared/registry.js';
import type { Logger } from '../observability/logger.js';
import type { Engine } from './engine.js';
import { faultsFromEnv, type Faults } from './faults.js';

export interface BatchWorkerOptions extends KeyspaceOptions {
  /** The models this worker serves. Required (at least one). */
  models: ModelSpec[];
  /**
   * Redis to connect to.
   * @defaultValue `REDIS_URL`, else `redis://127.0.0.1:6379`
   */
  redisUrl?: string;
  /**
   * `compiler`, `noop` (no model run: for tests of the queue system), or an engine object.
   * @defaultValue `'compiler'`
   */
  engine?: 'compiler' | 'noop' | Engine;
  /**
   * Allowed batch sizes: one variant of each held key is compiled per size.
   * @defaultValue `[1, 2, 4, 8]`
   */
  batchSizes?: number[];
  /**
   * How long to wait for more jobs after the first of a batch, in ms.
   * @defaultValue `20`
   */
  maxWaitMs?: number;
  /**
   * Hold exactly these compile keys (`model:pP:nN:strategy`), warmed at start.
   * @defaultValue the keys of the registry that have work
   */
  keys?: string[];
  /**
   * Hold exactly the keys the autoscaler assigns to this worker (the set `Keyspace.assignment(id)`,
   * read again at every registry refresh): a newly assigned key is compiled before its jobs are
   * taken, a key taken away is released after the jobs in hand. Requires `id`; excludes `keys`.
   * @defaultValue `false` (the registry's keys, or `keys`)
   */
  assigned?: boolean;
  /**
   * The most keys held when they come from the registry (idle ones are released for a key with work).
   * @defaultValue `32`
   */
  maxKeys?: number;
  /**
   * A registry entry whose queue is empty and that no producer wrote for this long (ms) is removed.
   * @defaultValue `3_600_000` (1 hour)
   */
  registryTtlMs?: number;
  /**
   * Lock duration of a taken job, in ms (renewed while its batch runs).
   * @defaultValue `30_000`
   */
  lockDurationMs?: number;
  /**
   * How often stalled jobs are looked for, in ms.
   * @defaultValue `30_000`
   */
  stalledIntervalMs?: number;
  /**
   * A job stalled more than this many times fails.
   * @defaultValue `1`
   */
  maxStalledCount?: number;
  /**
   * How often the registry is read for new keys, in ms.
   * @defaultValue `1000`
   */
  registryRefreshMs?: number;
  /**
   * Longest sleep when no queue has work, in ms.
   * @defaultValue `200`
   */
  idleMaxMs?: number;
  /**
   * Heartbeat interval, in ms (a record in Redis that expires after three intervals).
   * @defaultValue `2000`
   */
  heartbeatMs?: number;
  /**
   * Worker id in logs, lock tokens and heartbeats.
   * @defaultValue `<host>-<pid>`
   */
  id?: string;
  /**
   * Serve Prometheus metrics (`/metrics`) and `/healthz` on this port.
   * @defaultValue none (no server)
   */
  metricsPort?: number;
  /**
   * Device bytes (KV caches and workspace) of compiled variants: no more keys are held once it is
   * reached, unless idle keys are released (variants are never evicted while their key is held).
   * @defaultValue DEFAULT_VARIANT_BUDGET_BYTES (2 GiB)
   */
  cacheBudgetBytes?: number;
  /**
   * Threads of the native matmul kernels (oneDNN) of this worker's engine.
   * @defaultValue `BATCHGEN_THREADS`, else 1 (run one worker process per core)
   */
  threads?: number;
  /**
   * `/healthz` answers 503 after this many loop iterations in a row ended in an error.
   * @defaultValue `5`
   */
  unhealthyAfterLoopErrors?: number;
  /**
   * How long a stop may take, in ms: the batch in hand is given until then, less a margin for closing;
   * what is left unfinished is logged and comes back to the queues through stall recovery. The
   * process exits at this bound whatever Redis does (a second SIGTERM or SIGINT exits at once).
   * @defaultValue `30_000`
   */
  shutdownTimeoutMs?: number;
  /**
   * The watchdog's bound, in ms: /healthz answers 503 when Redis has not answered a PING for this
   * long, or when no fetch (queue counts, takes) has succeeded for this long while jobs wait and no
   * batch is running.
   * @defaultValue `30_000`
   */
  watchdogMs?: number;
  /**
   * Start even though Redis's `maxmemory-policy` evicts keys (which can lose queued jobs and
   * results); without it such a Redis is refused at start.
   * @defaultValue `false`
   */
  allowEviction?: boolean;
  /**
   * Failures injected on purpose (tests and drills only).
   * @defaultValue `BATCHGEN_FAULTS`, else none
   */
  faults?: Faults;
  /**
   * @defaultValue a `worker` child of the root logger
   */
  logger?: Logger;
}

/** The options with every default applied and every value checked. */
export interface ResolvedOptions {
  id: string;
  models: ModelSpec[];
  redisUrl: string | undefined;
  engine: 'compiler' | 'noop' | Engine;
  /** sorted, no duplicates */
  batchSizes: number[];
  /** the largest batch size */
  bMax: number;
  maxWaitMs: number;
  /** explicit keys, or null for the registry's (or the assignment's) */
  keys: string[] | null;
  /** keys come from the autoscaler's assignment set of this worker's id */
  assigned: boolean;
  maxKeys: number;
  registryTtlMs: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  maxStalledCount: number;
  registryRefreshMs: number;
  idleMaxMs: number;
  heartbeatMs: number;
  metricsPort: number | undefined;
  cacheBudgetBytes: number;
  threads: number | undefined;
  unhealthyAfterLoopErrors: number;
  shutdownTimeoutMs: number;
  watchdogMs: number;
  allowEviction: boolean;
  faults: Faults;
  logger: Logger | undefined;
}

export const WORKER_DEFAULTS = {
  engine: 'compiler',
  maxWaitMs: 20,
  maxKeys: 32,
  registryTtlMs: DEFAULT_REGISTRY_TTL_MS,
  lockDurationMs: 30_000,
  stalledIntervalMs: 30_000,
  maxStalledCount: 1,
  registryRefreshMs: 1000,
  idleMaxMs: 200,
  heartbeatMs: 2000,
  cacheBudgetBytes: DEFAULT_VARIANT_BUDGET_BYTES,
  unhealthyAfterLoopErrors: 5,
  shutdownTimeoutMs: 30_000,
  watchdogMs: 30_000,
} as const;

function nonNegative(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!(Number.isFinite(v) && v >= 0)) throw new Error(`${name} must be a number ≥ 0, got ${v}`);
  return v;
}

function integerAtLeast(name: string, v: number | undefined, min: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (!(Number.isInteger(v) && v >= min))
    throw new Error(min === 1 ? `${name} must be a positive integer, got ${v}` : `${name} must be an integer ≥ ${min}, got ${v}`);
  return v;
}

/** Applies the defaults and checks every value; throws naming the first bad one. */
export function resolveOptions(opts: BatchWorkerOptions): ResolvedOptions {
  if (!opts.models || opts.models.length === 0) throw new Error('a worker needs at least one model (--model NAME=DIR)');
  const d = WORKER_DEFAULTS;
  const maxWaitMs = nonNegative('maxWaitMs', opts.maxWaitMs, d.maxWaitMs);
  const lockDurationMs = nonNegative('lockDurationMs', opts.lockDurationMs, d.lockDurationMs);
  const stalledIntervalMs = nonNegative('stalledIntervalMs', opts.stalledIntervalMs, d.stalledIntervalMs);
  const registryRefreshMs = nonNegative('registryRefreshMs', opts.registryRefreshMs, d.registryRefreshMs);
  const idleMaxMs = nonNegative('idleMaxMs', opts.idleMaxMs, d.idleMaxMs);
  const heartbeatMs = nonNegative('heartbeatMs', opts.heartbeatMs, d.heartbeatMs);
  const shutdownTimeoutMs = nonNegative('shutdownTimeoutMs', opts.shutdownTimeoutMs, d.shutdownTimeoutMs);
  const watchdogMs = nonNegative('watchdogMs', opts.watchdogMs, d.watchdogMs);
  const registryTtlMs = nonNegative('registryTtlMs', opts.registryTtlMs, d.registryTtlMs);
  const maxKeys = integerAtLeast('maxKeys', opts.maxKeys, 1, d.maxKeys);
  const maxStalledCount = integerAtLeast('maxStalledCount', opts.maxStalledCount, 0, d.maxStalledCount);
  const unhealthyAfterLoopErrors = integerAtLeast('unhealthyAfterLoopErrors', opts.unhealthyAfterLoopErrors, 1, d.unhealthyAfterLoopErrors);
  const batchSizes = checkBatchSizes(opts.batchSizes ?? [...DEFAULT_BATCH_SIZES]);
  if (opts.cacheBudgetBytes !== undefined && !(opts.cacheBudgetBytes > 0))
    throw new Error(`cacheBudgetBytes must be positive, got ${opts.cacheBudgetBytes}`);
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1))
    throw new Error(`threads must be a positive integer, got ${opts.threads}`);
  for (const k of opts.keys ?? []) parseKeyId(k);
  const assigned = opts.assigned ?? false;
  if (assigned && opts.id === undefined) throw new Error('an assigned worker needs its id (--id ID): its keys are assigned to that id');
  if (assigned && opts.keys) throw new Error('assigned and keys exclude each other: an assigned worker holds the keys assigned to it');
  if (assigned) checkWorkerId(opts.id!);
  return {
    id: opts.id ?? `${hostname()}-${process.pid}`,
    models: opts.models,
    redisUrl: opts.redisUrl,
    engine: opts.engine ?? d.engine,
    batchSizes,
    bMax: batchSizes[batchSizes.length - 1],
    maxWaitMs,
    keys: opts.keys ?? null,
    assigned,
    maxKeys,
    registryTtlMs,
    lockDurationMs,
    stalledIntervalMs,
    maxStalledCount,
    registryRefreshMs,
    idleMaxMs,
    heartbeatMs,
    metricsPort: opts.metricsPort,
    cacheBudgetBytes: opts.cacheBudgetBytes ?? d.cacheBudgetBytes,
    threads: opts.threads,
    unhealthyAfterLoopErrors,
    shutdownTimeoutMs,
    watchdogMs,
    allowEviction: opts.allowEviction ?? false,
    faults: opts.faults ?? faultsFromEnv(),
    logger: opts.logger,
  };
}
