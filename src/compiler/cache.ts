/**
 * The compile cache: compiled variants keyed by variant id, bounded by a memory budget (bytes of KV
 * cache and workspace), least recently used first out. Counts compiles, hits and evictions.
 */
import { CompiledVariant, type VariantModel } from './compile.js';
import { variantId, type CompileKey } from '../shared/compile-key.js';
import { DEFAULT_VARIANT_BUDGET_BYTES } from '../shared/memory.js';

export interface VariantCacheOptions {
  /**
   * Device bytes the cached variants may hold together (weights not included); `Infinity` never evicts.
   * @defaultValue DEFAULT_VARIANT_BUDGET_BYTES (2 GiB)
   */
  budgetBytes?: number;
  /** Called after each compile, e.g. for logs and metrics. Default: none. */
  onCompile?: (v: CompiledVariant) => void;
}

export interface VariantCacheStats {
  compiles: number;
  hits: number;
  evictions: number;
  bytes: number;
  variants: string[];
  /** per cached variant: seconds its compile and warm-up took, and the pipelines it created (webgpu) */
  compile: Record<string, { seconds: number; pipelines: number }>;
}

export class VariantCache {
  private readonly budget: number;
  private readonly entries = new Map<string, Promise<CompiledVariant>>(); // insertion order = LRU order
  private readonly sizes = new Map<string, number>();
  private readonly compiled = new Map<string, { seconds: number; pipelines: number }>();
  private counts = { compiles: 0, hits: 0, evictions: 0 };

  constructor(private readonly opts: VariantCacheOptions = {}) {
    this.budget = opts.budgetBytes ?? DEFAULT_VARIANT_BUDGET_BYTES;
    if (!(this.budget > 0)) throw new Error(`VariantCache budgetBytes must be positive, got ${opts.budgetBytes}`);
  }

  /** The compiled variant of key at batch size B, compiling (and warming) it on a miss. */
  async get(model: VariantModel, key: CompileKey, batchSize: number): Promise<CompiledVariant> {
    const id = variantId({ ...key, B: batchSize });
    const hit = this.entries.get(id);
    if (hit) {
      this.counts.hits += 1;
      this.entries.delete(id);
      this.entries.set(id, hit);
      return hit;
    }
    this.counts.compiles += 1;
    const pending = CompiledVariant.compile(model, key, batchSize);
    this.entries.set(id, pending);
    try {
      const v = await pending;
      this.sizes.set(id, v.bytes);
      this.compiled.set(id, { seconds: v.compileMs / 1000, pipelines: v.warmupPipelines.count });
      this.opts.onCompile?.(v);
      await this.evictOver(id);
      return v;
    } catch (e) {
      this.entries.delete(id);
      throw e;
    }
  }

  /** Disposes the variant of key at batch size B (a key given up): true when it was cached. */
  async release(key: CompileKey, batchSize: number): Promise<boolean> {
    const id = variantId({ ...key, B: batchSize });
    const entry = this.entries.get(id);
    if (!entry) return false;
    this.entries.delete(id);
    this.sizes.delete(id);
    (await entry.catch(() => null))?.dispose();
    return true;
  }

  /** Drops least recently used variants until the budget holds (never the one just compiled). */
  private async evictOver(keepId: string): Promise<void> {
    for (const [id, entry] of this.entries) {
      if (this.bytes() <= this.budget) return;
      if (id === keepId || !this.sizes.has(id)) continue;
      this.entries.delete(id);
      this.sizes.delete(id);
      this.counts.evictions += 1;
      (await entry).dispose();
    }
  }

  private bytes(): number {
    let n = 0;
    for (const b of this.sizes.values()) n += b;
    return n;
  }

  stats(): VariantCacheStats {
    const compile = Object.fromEntries(
      [...this.sizes.keys()].flatMap((id) => (this.compiled.has(id) ? [[id, this.compiled.get(id)!]] : [])),
    );
    return { ...this.counts, bytes: this.bytes(), variants: [...this.sizes.keys()], compile };
  }

  async dispose(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    this.sizes.clear();
    for (const p of all) (await p.catch(() => null))?.dispose();
  }
}
