/**
 * The kernel `BatchgenCacheAttention` of the wasm backend: one decode step's attention over the
 * static KV cache, in one native pass (native/src/attention.h) on the tensors in the wasm heap.
 * Registered with the native kernels; src/compiler/attention.ts calls it when it is registered and
 * writes the same attention in tfjs ops otherwise.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { NativeAddon } from './addon.js';
import type { KernelFunc } from './matmul-kernels.js';

export const CACHE_ATTENTION = 'BatchgenCacheAttention';

interface WasmBackend {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: string): TensorInfo;
  wasm: { HEAPU8: Uint8Array };
}

/** Attributes: query heads, the score scale, and the bias at or below which a key is hidden. */
export interface CacheAttentionAttrs {
  heads: number;
  scale: number;
  masked: number;
}

/** Inputs q [R, H·D], k [R, KV, T, D], vt [R, KV, D, T], bias [R, 1, T]; output [R, H·D]. */
export function cacheAttentionKernel(addon: NativeAddon): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { q, k, vt, bias } = inputs as Record<'q' | 'k' | 'vt' | 'bias', TensorInfo>;
    const { heads, scale, masked } = attrs as unknown as CacheAttentionAttrs;
    const [R, KV, T, D] = k.shape;
    const b = backend as unknown as WasmBackend;
    const out = b.makeOutput([R, heads * D], 'float32');
    // offsets after makeOutput: its malloc may grow the memory and replace the buffer
    const off = (t: TensorInfo) => b.dataIdMap.get(t.dataId)!.memoryOffset;
    const heap = b.wasm.HEAPU8.buffer as ArrayBuffer;
    addon.attention(heap, off(q), off(k), off(vt), off(bias), off(out), R, heads, KV, T, D, scale, masked);
    return out;
  };
}
