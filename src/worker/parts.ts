/** The parts a started worker is made of, built once its Redis connection and engine exist. */
import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';
import { BatchStore } from '../shared/batch-store.js';
import type { Keyspace } from '../shared/keys.js';
import type { Engine, EngineModel } from './engine.js';
import { KeyHolder } from './key-holder.js';
import type { WorkerMetrics } from './metrics.js';
import type { ResolvedOptions } from './options.js';
import { Settler } from './settler.js';

/** What start() builds and the loop uses. */
export interface Parts {
  redis: Redis;
  engine: Engine;
  holder: KeyHolder;
  settler: Settler;
}

/** What the parts need of their worker. */
export interface PartsContext {
  workerId: string;
  models: Map<string, EngineModel>;
  opts: ResolvedOptions;
  metrics: WorkerMetrics;
  log: Logger;
  stopping: () => boolean;
  jobsInHand: () => number;
  nextToken: () => string;
}

export function buildParts(redis: Redis, engine: Engine, keys: Keyspace, ctx: PartsContext): Parts {
  const holder = new KeyHolder({
    redis,
    keys,
    engine,
    models: ctx.models,
    opts: ctx.opts,
    log: ctx.log,
    stopping: ctx.stopping,
    jobsInHand: ctx.jobsInHand,
    nextToken: ctx.nextToken,
  });
  const settler = new Settler({
    workerId: ctx.workerId,
    store: new BatchStore(redis, keys),
    metrics: ctx.metrics,
    log: ctx.log,
    stopping: ctx.stopping,
  });
  return { redis, engine, holder, settler };
}
