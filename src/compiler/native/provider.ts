/**
 * The kernel provider of the wasm backend: `native` (the addon's matmuls on oneDNN or its panel
 * kernel, its decode attention and row kernels; the default when it loads) or `stock` (tfjs-wasm's
 * own XNNPACK kernels). `BATCHGEN_KERNELS=native|stock` forces one; `BATCHGEN_THREADS` (or
 * `setKernelThreads`) sets the native kernels' thread count, 1 by default (one worker process per
 * core). Other backends always run their own kernels (`stock`).
 */
import * as tf from '@tensorflow/tfjs-core';
import { loadAddon } from './addon.js';
import { CACHE_ATTENTION, cacheAttentionKernel } from './attention-kernel.js';
import type { KernelFunc } from './heap-kernel.js';
import { NativeMatmuls, type NativeStats } from './matmul-kernels.js';
import { rowKernels } from './row-kernels.js';

export type KernelsName = 'native' | 'stock';

export interface KernelsInfo {
  kernels: KernelsName;
  /** The native library and version when native kernels run, else null. */
  library: string | null;
  /** Threads of the native kernels (1 for stock: tfjs-wasm runs one thread here). */
  threads: number;
  /** Why stock kernels run, when they do. */
  reason: string;
}

const OVERRIDDEN = ['_FusedMatMul', 'BatchMatMul'] as const;

let matmuls: NativeMatmuls | null = null;
/** The addon's own kernels registered while native kernels run (attention, row ops). */
const ownKernelNames = new Set<string>();
let stockConfigs: Map<string, tf.KernelConfig> | null = null;
let info: KernelsInfo = { kernels: 'stock', library: null, threads: 1, reason: 'kernel provider not chosen yet' };

function register(config: tf.KernelConfig): void {
  if (tf.getKernel(config.kernelName, config.backendName)) tf.unregisterKernel(config.kernelName, config.backendName);
  tf.registerKernel(config);
}

function threadsFromEnv(): number {
  const raw = process.env.BATCHGEN_THREADS;
  const n = raw === undefined ? 1 : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`BATCHGEN_THREADS="${raw}": expected a positive integer`);
  return n;
}

/**
 * Chooses the kernels of a freshly initialised backend (called by initBackend). Throws when
 * `BATCHGEN_KERNELS=native` is asked for and cannot be had.
 */
export function installKernels(backend: string, requested?: KernelsName): KernelsInfo {
  const forced = requested ?? (process.env.BATCHGEN_KERNELS as KernelsName | undefined);
  if (forced !== undefined && forced !== 'native' && forced !== 'stock') {
    throw new Error(`BATCHGEN_KERNELS="${forced}": expected native or stock`);
  }
  if (backend !== 'wasm') {
    if (forced === 'native') throw new Error(`BATCHGEN_KERNELS=native: native kernels are for the wasm backend, not ${backend}`);
    info = { kernels: 'stock', library: null, threads: 1, reason: `backend ${backend} runs its own kernels` };
    return info;
  }
  if (forced === 'stock') return useKernels('stock', 'BATCHGEN_KERNELS=stock');
  const { addon, reason } = loadAddon();
  if (addon === null) {
    if (forced === 'native') throw new Error(`BATCHGEN_KERNELS=native: ${reason}`);
    return useKernels('stock', reason);
  }
  addon.setThreads(threadsFromEnv());
  return useKernels('native');
}

/**
 * Switches the wasm backend's matmul kernels (tests compare the two in one process). Kernels are
 * looked up on every call, so the switch takes effect at the next op.
 */
export function useKernels(name: KernelsName, reason = ''): KernelsInfo {
  if (stockConfigs === null) {
    stockConfigs = new Map(OVERRIDDEN.map((k) => [k, tf.getKernel(k, 'wasm')!]));
  }
  if (name === 'stock') {
    for (const c of stockConfigs.values()) register(c);
    for (const k of ownKernelNames) if (tf.getKernel(k, 'wasm')) tf.unregisterKernel(k, 'wasm');
    ownKernelNames.clear();
    info = { kernels: 'stock', library: null, threads: 1, reason: reason || 'asked for' };
    return info;
  }
  const { addon, reason: why } = loadAddon();
  if (addon === null) throw new Error(`native kernels: ${why}`);
  matmuls ??= new NativeMatmuls(addon);
  const stock = (k: string) => stockConfigs!.get(k)!.kernelFunc as unknown as KernelFunc;
  const natives: Record<(typeof OVERRIDDEN)[number], KernelFunc> = {
    _FusedMatMul: matmuls.fusedMatMul(stock('_FusedMatMul')),
    BatchMatMul: matmuls.batchMatMul(stock('BatchMatMul')),
  };
  for (const k of OVERRIDDEN) register({ kernelName: k, backendName: 'wasm', kernelFunc: natives[k] as unknown as tf.KernelFunc });
  // the addon's own kernels: attention over the cache needs AVX2; the row ops run anywhere
  const own: Record<string, KernelFunc> = { ...rowKernels(addon) };
  if (addon.ownKernels()) own[CACHE_ATTENTION] = cacheAttentionKernel(addon);
  for (const [k, f] of Object.entries(own)) {
    register({ kernelName: k, backendName: 'wasm', kernelFunc: f as unknown as tf.KernelFunc });
    ownKernelNames.add(k);
  }
  info = { kernels: 'native', library: addon.version(), threads: addon.threads(), reason: '' };
  return info;
}

/**
 * Whether the addon's own kernel `name` runs now (native kernels on, on wasm, and registered: the
 * attention kernel needs AVX2). The model code asks at each op and otherwise writes it in tfjs ops.
 */
export function nativeKernel(name: string): boolean {
  return info.kernels === 'native' && ownKernelNames.has(name) && tf.getBackend() === 'wasm';
}

/** Which kernels run, with what library and how many threads. */
export function kernelsInfo(): KernelsInfo {
  return { ...info };
}

/** Sets the native kernels' thread count (a worker's `--threads`); returns the count in effect. */
export function setKernelThreads(n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`threads ${n}: expected a positive integer`);
  const { addon } = loadAddon();
  if (addon === null || info.kernels !== 'native') return info.threads;
  info.threads = addon.setThreads(n);
  return info.threads;
}

/**
 * Marks the tensors of a weights object (any nesting of objects and arrays) as constant, so the
 * native kernels pack them once. Harmless with stock kernels.
 */
export function markConstants(weights: unknown): void {
  if (matmuls === null) {
    const { addon } = loadAddon();
    if (addon === null) return;
    matmuls = new NativeMatmuls(addon);
  }
  const seen = new Set<unknown>();
  const walk = (v: unknown): void => {
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (v instanceof tf.Tensor) matmuls!.markConstant(v);
    else for (const x of Array.isArray(v) ? v : Object.values(v)) walk(x);
  };
  walk(weights);
}

/** Native primitives created and packed weights alive in this process (zeros before any native op). */
export function nativeStats(): NativeStats {
  return matmuls?.stats() ?? { primitives: 0, packs: 0, layouts: { stored: 0, transposed: 0, panels: 0 } };
}
