/**
 * One decode step's attention over the static KV cache, for every family: each row's new query
 * against all T cache positions, the additive mask hiding padding and the positions not written
 * yet. Grouped-query attention: query head h reads key/value head h / (H / KV).
 */
import { tf } from './backend.js';
import { nativeKernel } from './native/provider.js';
import { CACHE_ATTENTION } from './native/attention-kernel.js';
import { NEG } from './packing.js';

/**
 * q [R, H·D] (heads side by side); k [R, KV, T, D] and vt [R, KV, D, T] (values transposed, so both
 * sums run over the last axis); keyBias [R, 1, T]. Returns [R, H·D].
 *
 * With the native kernels, one native kernel. Otherwise broadcast multiply and sum in tfjs ops: on
 * wasm a batched matmul takes a slow scalar path, and at one query per row the two cost the same
 * flops. The G query heads of a group meet their key/value head by broadcasting over the group axis.
 */
export function cacheAttention(q: tf.Tensor, k: tf.Tensor4D, vt: tf.Tensor4D, keyBias: tf.Tensor3D, H: number): tf.Tensor2D {
  const [R, KV, T, D] = k.shape;
  const scale = 1 / Math.sqrt(D);
  if (nativeKernel(CACHE_ATTENTION)) {
    const attrs = { heads: H, scale, masked: NEG / 2 };
    return tf.engine().runKernel(CACHE_ATTENTION, { q, k, vt, bias: keyBias }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D;
  }
  const G = H / KV;
  const q4 = tf.reshape(q, [R * KV, G, 1, D]);
  const scores = tf.reshape(tf.sum(tf.mul(q4, tf.reshape(k, [R * KV, 1, T, D])), -1), [R, KV, G, T]);
  const probs = tf.softmax(tf.add(tf.mul(scores, scale), tf.reshape(keyBias, [R, 1, 1, T])));
  const att = tf.sum(tf.mul(tf.reshape(probs, [R * KV, G, 1, T]), tf.reshape(vt, [R * KV, 1, D, T])), -1);
  return tf.reshape(att, [R, H * D]) as tf.Tensor2D;
}
