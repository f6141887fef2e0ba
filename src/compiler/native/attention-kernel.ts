/**
 * The kernel `BatchgenCacheAttention` of the wasm backend: one decode step's attention over the
 * static KV cache, in one native pass (native/src/attention.h) on the tensors in the wasm heap.
 * Registered with the native kernels; src/compiler/attention.ts calls it when it is registered and
 * writes the same attention in tfjs ops otherwise.
 */
import type { NativeAddon } from './addon.js';
import { heapKernel, type KernelFunc } from './heap-kernel.js';

export const CACHE_ATTENTION = 'BatchgenCacheAttention';

/** Attributes: query heads, the score scale, and the bias at or below which a key is hidden. */
export interface CacheAttentionAttrs {
  heads: number;
  scale: number;
  masked: number;
}

/** Inputs q [R, H·D], k [R, KV, T, D], vt [R, KV, D, T], bias [R, 1, T]; output [R, H·D]. */
export function cacheAttentionKernel(addon: NativeAddon): KernelFunc {
  return heapKernel(
    ({ k }, attrs) => [k.shape[0], (attrs.heads as number) * k.shape[3]],
    ({ q, k, vt, bias }, heap, off, out, attrs) => {
      const { heads, scale, masked } = attrs as unknown as CacheAttentionAttrs;
      const [R, KV, T, D] = k.shape;
      addon.attention(heap, off(q), off(k), off(vt), off(bias), off(out), R, heads, KV, T, D, scale, masked);
    },
  );
}
