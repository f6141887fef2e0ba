/**
 * Kernels of the wasm backend for the per-row and element-wise parts of a layer, one native pass
 * each (native/src/rowops.h): layer norm, RMS norm, GPT-2's tanh GELU, Llama's SiLU-gated
 * product and rotary embedding. Registered with the native kernels; src/compiler/fused.ts calls
 * them when registered and writes the same functions in tfjs ops otherwise.
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';
import type { NativeAddon } from './addon.js';
import { heapKernel, type KernelFunc } from './heap-kernel.js';

export const LAYER_NORM = 'BatchgenLayerNorm';
export const RMS_NORM = 'BatchgenRmsNorm';
export const GELU = 'BatchgenGelu';
export const SILU_MUL = 'BatchgenSiluMul';
export const ROTARY = 'BatchgenRotary';

/** A kernel whose output has the shape of input `x`. */
const rowKernel = (x: string, call: Parameters<typeof heapKernel>[1]) => heapKernel((ins) => ins[x].shape, call);

const size = (t: TensorInfo) => t.shape.reduce((a, b) => a * b, 1);
const width = (t: TensorInfo) => t.shape[t.shape.length - 1];

export function rowKernels(addon: NativeAddon): Record<string, KernelFunc> {
  return {
    [LAYER_NORM]: rowKernel('x', ({ x, g, b }, heap, off, out, a) =>
      addon.layerNorm(heap, off(x), off(g), off(b), off(out), size(x) / width(x), width(x), a.eps as number),
    ),
    [RMS_NORM]: rowKernel('x', ({ x, w }, heap, off, out, a) =>
      addon.rmsNorm(heap, off(x), off(w), off(out), size(x) / width(x), width(x), a.eps as number),
    ),
    [GELU]: rowKernel('x', ({ x }, heap, off, out) => addon.gelu(heap, off(x), off(out), size(x))),
    [SILU_MUL]: rowKernel('g', ({ g, u }, heap, off, out) => addon.siluMul(heap, off(g), off(u), off(out), size(g))),
    // x [..., heads, D]; cos and sin hold D/2 angles per position
    [ROTARY]: rowKernel('x', ({ x, cos, sin }, heap, off, out) => {
      const [heads, D] = x.shape.slice(-2);
      const positions = size(x) / (heads * D);
      if (size(cos) !== (positions * D) / 2) throw new Error(`rotary: ${size(cos)} angles for ${positions} positions of ${D}`);
      addon.rotary(heap, off(x), off(cos), off(sin), off(out), positions, heads, D);
    }),
  };
}
