/**
 * Loads the oneDNN addon built by `native/install.mjs` (during `npm ci`), if it was built. Its
 * absence is normal (no libdnnl-dev or no compiler): the engine then runs stock tfjs-wasm kernels.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The addon's functions; offsets are byte offsets into the wasm heap passed as `heap`. */
export interface NativeAddon {
  /** [id, implementation name]; packed: the weights are a copy in the other layout (see pack). */
  create(
    batchA: number,
    batchB: number,
    M: number,
    K: number,
    N: number,
    transA: number,
    transB: number,
    hasBias: number,
    act: number,
    alpha: number,
    packed: number,
  ): [number, string];
  pack(heap: ArrayBuffer, bOffset: number, matmulId: number): number;
  unpack(packId: number): void;
  run(heap: ArrayBuffer, matmulId: number, a: number, b: number, bias: number, out: number, packId: number): void;
  /** Packs [K, N] weights (stored [N, K] when transposed) into 8-column panels; returns a pack id. */
  packPanels(heap: ArrayBuffer, bOffset: number, K: number, N: number, transposed: number): number;
  /** out[M, N] = a[M, K] @ panels (+ bias when biasOffset >= 0). */
  runPanels(heap: ArrayBuffer, aOffset: number, M: number, packId: number, biasOffset: number, outOffset: number): void;
  /** One decode step's attention over the cache (native/src/attention.h); offsets into heap. */
  attention(
    heap: ArrayBuffer,
    q: number,
    k: number,
    vt: number,
    bias: number,
    out: number,
    R: number,
    H: number,
    KV: number,
    T: number,
    D: number,
    scale: number,
    masked: number,
  ): void;
  layerNorm(heap: ArrayBuffer, x: number, g: number, b: number, out: number, rows: number, n: number, eps: number): void;
  rmsNorm(heap: ArrayBuffer, x: number, w: number, out: number, rows: number, n: number, eps: number): void;
  gelu(heap: ArrayBuffer, x: number, out: number, n: number): void;
  siluMul(heap: ArrayBuffer, g: number, u: number, out: number, n: number): void;
  rotary(heap: ArrayBuffer, x: number, cos: number, sin: number, out: number, positions: number, heads: number, D: number): void;
  /** Whether this CPU runs the addon's own kernels, panels and attention (AVX2 and FMA). */
  ownKernels(): boolean;
  /** Evicts the caches (writes a buffer larger than them). */
  flush(): void;
  /** One thread's read bandwidth from memory, GB/s (a 512 MiB buffer, median of 5). */
  readBandwidth(): number;
  setThreads(n: number): number;
  threads(): number;
  version(): string;
}

/** The package root: the first folder above this file with a package.json (src/ or dist/src/). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

let loaded: { addon: NativeAddon | null; reason: string } | null = null;

/** The addon, or null with the reason it is not there. Loaded once per process. */
export function loadAddon(): { addon: NativeAddon | null; reason: string } {
  if (loaded) return loaded;
  // BATCHGEN_NATIVE_ADDON points elsewhere (a test runs the fallback with a path that is not there).
  const file = process.env.BATCHGEN_NATIVE_ADDON ?? join(packageRoot(), 'native', 'build', 'Release', 'batchgen_native.node');
  if (!existsSync(file)) {
    loaded = { addon: null, reason: `addon not built (${file}; needs libdnnl-dev and g++ at npm ci)` };
    return loaded;
  }
  try {
    loaded = { addon: createRequire(import.meta.url)(file) as NativeAddon, reason: '' };
  } catch (e) {
    loaded = { addon: null, reason: `addon failed to load: ${(e as Error).message.split('\n')[0]}` };
  }
  return loaded;
}
