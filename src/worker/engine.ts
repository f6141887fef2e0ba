/**
 * What a worker runs rows with. `compiler` is the real one (src/compiler: compiled, warmed variants
 * in a memory-bounded cache); `noop` answers at once without a model forward (for measuring the
 * queue system itself). The compiler is imported only when used, so `noop` needs no tfjs.
 */
import type { RowRequest, RowResult } from '../compiler/types.js';
import type { CompileKey } from '../shared/compile-key.js';
import { loadModelInfo } from '../model/info.js';
import type { ModelSpec } from '../shared/models.js';

export interface EngineModel {
  name: string;
  dir: string;
  contextLength: number;
  vocabSize: number;
  decode(ids: number[]): Promise<string>;
}

export interface EngineVariant {
  id: string;
  batchSize: number;
  /** rows.length ≤ batchSize; the rest are masked dummy rows. */
  run(rows: RowRequest[]): Promise<RowResult[]>;
}

export interface EngineStats {
  compiles: number;
  retraces: number;
  evictions: number;
  /** device bytes held by compiled variants */
  bytes: number;
  /** live tfjs tensors, `tf.memory().numTensors` (0 or absent without tfjs) */
  tensors?: number;
  /** bytes of live tfjs tensors, `tf.memory().numBytes` (0 or absent without tfjs) */
  tensorBytes?: number;
  /** compute pipelines created in this process (webgpu; 0 elsewhere), and those after a warm-up (must stay 0) */
  pipelines?: number;
  pipelinesAfterWarmup?: number;
  /** per cached variant id: seconds its compile and warm-up took */
  variantCompileSeconds?: Record<string, number>;
}

export interface Engine {
  readonly kind: 'compiler' | 'noop';
  /** The tfjs backend in use ('none' for noop). */
  readonly backend: string;
  /** What runs its kernels: xnnpack, dawn (adapter), libtensorflow, javascript ('none' for noop). */
  readonly kernelProvider: string;
  /** Matmul kernels: 'native' (oneDNN), 'stock' (the backend's own), 'none' for noop. */
  readonly kernels?: string;
  /** Threads of the native kernels (1 otherwise). */
  readonly threads?: number;
  /** Why stock kernels run, when they do on the wasm backend (the addon missing, or asked for). */
  readonly kernelsReason?: string;
  loadModel(spec: ModelSpec): Promise<EngineModel>;
  /** Compiles and warms one variant (a miss in the cache) or returns the cached one. */
  compile(model: EngineModel, key: CompileKey, batchSize: number): Promise<EngineVariant>;
  /** Disposes the variant of key at batchSize, if compiled: its memory is given back. */
  release(key: CompileKey, batchSize: number): Promise<void>;
  stats(): EngineStats;
  dispose(): Promise<void>;
}

export interface EngineOptions {
  /**
   * Device bytes that compiled variants may hold (KV caches and workspace); `Infinity` never evicts.
   * @defaultValue DEFAULT_VARIANT_BUDGET_BYTES (2 GiB)
   */
  cacheBudgetBytes?: number;
  /**
   * Threads of the native kernels (oneDNN); stock tfjs-wasm runs one thread whatever this says.
   * @defaultValue `BATCHGEN_THREADS`, else 1 (one worker process per core)
   */
  threads?: number;
}

type CompilerModule = typeof import('../compiler/index.js');
type Loaded = Awaited<ReturnType<CompilerModule['loadModel']>>;

/** The real engine: src/compiler. */
export async function createCompilerEngine(opts: EngineOptions = {}): Promise<Engine> {
  const c: CompilerModule = await import('../compiler/index.js');
  const backend = await c.initBackend();
  if (opts.threads !== undefined) c.setKernelThreads(opts.threads);
  const kernels = c.kernelsInfo();
  const cache = new c.VariantCache({ budgetBytes: opts.cacheBudgetBytes });
  const loaded = new Map<string, Loaded>();
  return {
    kind: 'compiler',
    backend,
    kernelProvider: c.kernelProvider(),
    kernels: kernels.kernels,
    threads: kernels.threads,
    kernelsReason: kernels.reason,
    async loadModel(spec) {
      const m = await c.loadModel(spec.dir, spec.name);
      loaded.set(spec.name, m);
      return {
        name: spec.name,
        dir: spec.dir,
        contextLength: m.folder.arch.contextLength,
        vocabSize: m.folder.arch.vocabSize,
        decode: (ids) => m.folder.tokenizer.decode(ids),
      };
    },
    async compile(model, key, batchSize) {
      const m = loaded.get(model.name);
      if (!m) throw new Error(`model ${model.name} is not loaded`);
      const v = await cache.get(m, key, batchSize);
      return { id: v.id, batchSize: v.batchSize, run: (rows) => v.run(rows) };
    },
    async release(key, batchSize) {
      await cache.release(key, batchSize);
    },
    stats() {
      const s = cache.stats();
      const mem = c.tf.memory();
      return {
        compiles: s.compiles,
        retraces: c.retraces(),
        evictions: s.evictions,
        bytes: s.bytes,
        tensors: mem.numTensors,
        tensorBytes: mem.numBytes,
        pipelines: c.pipelineStats().created,
        pipelinesAfterWarmup: c.pipelinesAfterWarmup(),
        variantCompileSeconds: Object.fromEntries(Object.entries(s.compile).map(([id, v]) => [id, v.seconds])),
      };
    },
    async dispose() {
      await cache.dispose();
      for (const m of loaded.values()) m.dispose();
      loaded.clear();
    },
  };
}

/** Answers every row at once with max_new_tokens pad tokens: the cost of everything but the model. */
export async function createNoopEngine(): Promise<Engine> {
  let compiles = 0;
  return {
    kind: 'noop',
    backend: 'none',
    kernelProvider: 'none',
    kernels: 'none',
    threads: 1,
    async loadModel(spec) {
      const info = await loadModelInfo(spec);
      return {
        name: spec.name,
        dir: spec.dir,
        contextLength: info.contextLength,
        vocabSize: info.vocabSize,
        decode: (ids) => info.tokenizer.decode(ids),
      };
    },
    async compile(model, key, batchSize) {
      compiles += 1;
      return {
        id: `${model.name}:p${key.P}:n${key.N}:${key.strategy}:b${batchSize}`,
        batchSize,
        async run(rows) {
          return rows.map((r) => ({
            tokenIds: new Array<number>(r.params.max_new_tokens).fill(r.params.pad_token_id),
            finishReason: 'length' as const,
          }));
        },
      };
    },
    async release() {},
    stats: () => ({ compiles, retraces: 0, evictions: 0, bytes: 0, tensors: 0, tensorBytes: 0 }),
    async dispose() {},
  };
}

export function createEngine(kind: 'compiler' | 'noop', opts: EngineOptions = {}): Promise<Engine> {
  return kind === 'noop' ? createNoopEngine() : createCompilerEngine(opts);
}
