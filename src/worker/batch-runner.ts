/**
 * Running one collected group of jobs: the smallest allowed batch size that holds it (masked dummy
 * rows fill the rest), injected faults (tests only), the compiled variant, and the batch's metrics.
 */
import type { RowResult } from '../compiler/types.js';
import type { Logger } from '../observability/logger.js';
import { paddedBatchSize } from '../shared/batch-sizes.js';
import { beforeRun, type Faults } from './faults.js';
import type { HeldQueue, Ready } from './held-queue.js';
import { observeBatch, type WorkerMetrics } from './metrics.js';

export interface RunContext {
  batchSizes: number[];
  faults: Faults;
  metrics: WorkerMetrics;
  log: Logger;
}

/** Runs a group on the smallest allowed batch size; throws what the variant (or an injected fault) throws. */
export async function runBatch(held: HeldQueue, group: Ready[], ctx: RunContext): Promise<RowResult[]> {
  const B = paddedBatchSize(group.length, ctx.batchSizes);
  const variant = held.variants.get(B)!;
  ctx.log.info({ key: held.id, rows: group.length, B, jobs: group.map((g) => g.job.id) }, 'batch started');
  await beforeRun(
    ctx.faults,
    group.map((g) => g.payload.custom_id),
    ctx.log,
    held.id,
  );
  const t0 = performance.now();
  const out = await variant.run(group.map((g) => ({ promptIds: g.payload.prompt_ids, params: g.payload.params })));
  observeBatch(ctx.metrics, held.id, {
    B,
    rows: group.length,
    seconds: (performance.now() - t0) / 1000,
    promptTokens: group.reduce((s, g) => s + g.payload.prompt_ids.length, 0),
    bucketTokens: group.length * held.key.P,
    generatedTokens: out.reduce((s, r) => s + r.tokenIds.length, 0),
  });
  return out;
}
