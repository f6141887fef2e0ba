/**
 * The compiler's public face: load a model folder onto the device, compile variants, and run rows
 * in-process (what `batchgen generate` and the tests use; workers use VariantCache directly).
 */
import { initBackend } from './backend.js';
import { VariantCache } from './cache.js';
import type { CompiledVariant } from './compile.js';
import { type DeviceModel, toDevice } from './family.js';
import { readModelFolder } from './model-folder.js';
import { checkFitsBackend, largestTensors } from './model-size.js';
import { kernelsInfo } from './native/provider.js';
import { deviceWeightBytes } from '../model/arch.js';
import type { ModelFolder, RowRequest, RowResult } from './types.js';
import { checkModelFits } from './webgpu.js';
import { DEFAULT_BATCH_SIZES, checkBatchSizes, paddedBatchSize } from '../shared/batch-sizes.js';
import { DEFAULT_BUCKET_POLICY, type BucketPolicy } from '../shared/buckets.js';
import { compileKeyFor, keyId, type CompileKey } from '../shared/compile-key.js';
import { checkModelName, modelNameForFolder } from '../shared/keys.js';
import type { GenerationDefaults } from '../shared/params.js';

export { initBackend, kernelProvider, tf } from './backend.js';
export type { BackendName } from './backend.js';
export { VariantCache } from './cache.js';
export type { VariantCacheOptions, VariantCacheStats } from './cache.js';
export { CompiledVariant } from './compile.js';
export { pipelinesAfterWarmup, retraces, recentRetraces } from './shape-tracker.js';
export { pipelineStats } from './webgpu.js';
export { kernelsInfo, setKernelThreads, useKernels, nativeStats } from './native/provider.js';
export type { KernelsInfo, KernelsName } from './native/provider.js';
export { makeModel } from './make-model.js';
export { readModelFolder } from './model-folder.js';
export type * from './types.js';
export type { DeviceModel } from './family.js';

/** A model folder whose weights are on the device (F narrows the folder's family where it is known). */
export class LoadedModel<F extends ModelFolder = ModelFolder> {
  private constructor(
    readonly name: string,
    readonly folder: F,
    readonly weights: DeviceModel,
  ) {}

  static async load(dir: string, name = modelNameForFolder(dir)): Promise<LoadedModel> {
    checkModelName(name);
    const backend = await initBackend();
    // Sizes checked from config.json, before any weight is read: the wasm heap, or on webgpu the
    // adapter's largest storage binding (one binding per tensor).
    const folder = await readModelFolder(dir, (meta) => {
      checkFitsBackend(meta.dir, meta.arch, backend, kernelsInfo().kernels === 'native');
      checkModelFits(name, deviceWeightBytes(meta.arch), largestTensors(meta.arch));
    });
    return new LoadedModel(name, folder, toDevice(folder));
  }

  /** This model as one of the given family; throws when it is another. */
  as<K extends ModelFolder['family']>(family: K): LoadedModel<Extract<ModelFolder, { family: K }>> {
    if (this.folder.family !== family) throw new Error(`model ${this.name} is ${this.folder.family}, not ${family}`);
    return this as unknown as LoadedModel<Extract<ModelFolder, { family: K }>>;
  }

  get defaults(): GenerationDefaults {
    return this.folder.defaults;
  }

  get contextLength(): number {
    return this.folder.arch.contextLength;
  }

  /** Token ids to text with the folder's tokenizer (stop strings are checked on this text). */
  decode(ids: number[]): Promise<string> {
    return this.folder.tokenizer.decode(ids);
  }

  dispose(): void {
    this.weights.dispose();
  }
}

export function loadModel(dir: string, name?: string): Promise<LoadedModel> {
  return LoadedModel.load(dir, name);
}

export interface GenerateRowsOptions {
  policy?: BucketPolicy;
  batchSizes?: number[];
  cache?: VariantCache;
}

let defaultCache: VariantCache | null = null;

/**
 * Runs rows in-process: groups them by compile key, splits each group into batches of the allowed
 * sizes, and returns results in the input order.
 */
export async function generateRows(model: LoadedModel, rows: RowRequest[], opts: GenerateRowsOptions = {}): Promise<RowResult[]> {
  const policy = opts.policy ?? DEFAULT_BUCKET_POLICY;
  const sizes = checkBatchSizes(opts.batchSizes ?? [...DEFAULT_BATCH_SIZES]);
  const cache = opts.cache ?? (defaultCache ??= new VariantCache());
  const groups = new Map<string, { key: CompileKey; idx: number[] }>();
  rows.forEach((r, i) => {
    const key = compileKeyFor(model.name, r.promptIds.length, r.params, model.contextLength, policy);
    const id = keyId(key);
    if (!groups.has(id)) groups.set(id, { key, idx: [] });
    groups.get(id)!.idx.push(i);
  });
  const out = new Array<RowResult>(rows.length);
  const maxB = Math.max(...sizes);
  for (const { key, idx } of groups.values()) {
    for (let s = 0; s < idx.length; s += maxB) {
      const chunk = idx.slice(s, s + maxB);
      const variant: CompiledVariant = await cache.get(model, key, paddedBatchSize(chunk.length, sizes));
      const res = await variant.run(chunk.map((i) => rows[i]));
      chunk.forEach((i, j) => (out[i] = res[j]));
    }
  }
  return out;
}
