/**
 * The per-row and element-wise parts of a layer (norms, activations, rotary embedding): one native
 * kernel each when the native kernels run (native/row-kernels.ts), else the same function in tfjs
 * ops. Synchronous, for tf.tidy.
 */
import { tf } from './backend.js';
import { GELU, LAYER_NORM, RMS_NORM, ROTARY, SILU_MUL } from './native/row-kernels.js';
import { nativeKernel } from './native/provider.js';

const run = (name: string, inputs: tf.NamedTensorMap, attrs: Record<string, number> = {}) =>
  tf.engine().runKernel(name, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;

/** GPT-2's layer norm over the last axis (biased variance). */
export function layerNorm(x: tf.Tensor, g: tf.Tensor1D, b: tf.Tensor1D, eps: number): tf.Tensor {
  if (nativeKernel(LAYER_NORM)) return run(LAYER_NORM, { x, g, b }, { eps });
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), g), b);
}

/** x · rsqrt(mean(x²) + eps) · weight, over the last axis (LlamaRMSNorm). */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor1D, eps: number): tf.Tensor {
  if (nativeKernel(RMS_NORM)) return run(RMS_NORM, { x, w: weight }, { eps });
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), weight);
}

const GELU_A = 2 * Math.sqrt(2 / Math.PI);
const GELU_B = GELU_A * 0.044715;

/**
 * GPT-2's tanh approximation of GELU ("gelu_new"), 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))),
 * written as x·sigmoid(2·√(2/π)·(x + 0.044715·x³)) (the same function): on wasm, sigmoid and square
 * are fast kernels, pow and tanh are not.
 */
export function gelu(x: tf.Tensor): tf.Tensor {
  if (nativeKernel(GELU)) return run(GELU, { x });
  return tf.mul(x, tf.sigmoid(tf.mul(x, tf.add(tf.mul(tf.square(x), GELU_B), GELU_A))));
}

/** silu(g) · u, the gated product of Llama's MLP. */
export function siluMul(g: tf.Tensor, u: tf.Tensor): tf.Tensor {
  if (nativeKernel(SILU_MUL)) return run(SILU_MUL, { g, u });
  return tf.mul(tf.mul(g, tf.sigmoid(g)), u);
}

/**
 * Rotary embedding: x·cos + rotate_half(x)·sin over the last axis, rotate_half(x) = cat(-x₂, x₁) of
 * its two halves. x [..., heads, D]; cos, sin [..., 1, D/2] (one half of transformers'
 * `cat(freqs, freqs)`, which repeats them for both halves of a head).
 */
export function rotate(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  if (nativeKernel(ROTARY)) return run(ROTARY, { x, cos, sin });
  const [x1, x2] = tf.split(x, 2, -1);
  return tf.concat([tf.sub(tf.mul(x1, cos), tf.mul(x2, sin)), tf.add(tf.mul(x2, cos), tf.mul(x1, sin))], -1);
}
