/**
 * The obvious implementation without buckets, for comparison: one request at a time at its exact
 * prompt length, a KV cache that grows by concatenation every step, attention as batched matmul.
 * Same weights, same backend, same layer norm and GELU kernels, greedy.
 */
import { tf } from '../src/compiler/backend.js';
import { logits, type DeviceWeights } from '../src/compiler/gpt2.js';
import { gelu, layerNorm } from '../src/compiler/fused.js';

/** Forward of L new tokens at positions start.. with a growing cache; returns last logits [1, V]. */
function forward(w: DeviceWeights, ids: number[], start: number, cache: { k: tf.Tensor; v: tf.Tensor }[]): tf.Tensor {
  const { n_embd: E, n_head: H, layer_norm_epsilon: eps } = w.config;
  const D = E / H;
  const L = ids.length;
  let h = tf.add(tf.gather(w.wte, tf.tensor1d(ids, 'int32')), tf.gather(w.wpe, tf.range(start, start + L, 1, 'int32'))) as tf.Tensor2D;
  w.blocks.forEach((blk, i) => {
    const a = layerNorm(h, blk.ln1g, blk.ln1b, eps) as tf.Tensor2D;
    const heads = (w: tf.Tensor2D, b: tf.Tensor1D) => tf.transpose(tf.reshape(tf.add(tf.matMul(a, w), b), [L, H, D]), [1, 0, 2]);
    const [q, k, v] = [heads(blk.qW, blk.qB), heads(blk.kW, blk.kB), heads(blk.vW, blk.vB)];
    const old = cache[i];
    const kAll = old ? tf.concat([old.k, k], 1) : k;
    const vAll = old ? tf.concat([old.v, v], 1) : v;
    if (old) tf.dispose([old.k, old.v]);
    cache[i] = { k: tf.keep(kAll), v: tf.keep(vAll) };
    const S = start + L;
    let scores = tf.mul(tf.matMul(q, kAll, false, true), 1 / Math.sqrt(D)); // [H, L, S]
    if (L > 1) {
      const causal = tf.linalg.bandPart(tf.ones([L, S]), -1, S - L);
      scores = tf.add(scores, tf.mul(tf.sub(1, causal), -1e9));
    }
    const att = tf.reshape(tf.transpose(tf.matMul(tf.softmax(scores), vAll), [1, 0, 2]), [L, E]) as tf.Tensor2D;
    h = tf.add(h, tf.add(tf.matMul(att, blk.projW), blk.projB));
    const m = layerNorm(h, blk.ln2g, blk.ln2b, eps) as tf.Tensor2D;
    h = tf.add(h, tf.add(tf.matMul(gelu(tf.add(tf.matMul(m, blk.fcW), blk.fcB)) as tf.Tensor2D, blk.fcProjW), blk.fcProjB));
  });
  return logits(w, tf.slice(h, [L - 1, 0], [1, E]) as tf.Tensor2D);
}

/** Greedy generation of one request, exact length, growing cache; with its prefill and decode times. */
export async function baselineGreedy(
  w: DeviceWeights,
  prompt: number[],
  maxNew: number,
): Promise<{ tokens: number[]; prefillMs: number; decodeMs: number }> {
  const cache: { k: tf.Tensor; v: tf.Tensor }[] = [];
  const tokens: number[] = [];
  let input = prompt;
  let start = 0;
  const t0 = performance.now();
  let t1 = t0;
  for (let t = 0; t < maxNew; t++) {
    const next = tf.tidy(() => tf.argMax(forward(w, input, start, cache), 1));
    const id = (await next.data())[0];
    next.dispose();
    if (t === 0) t1 = performance.now();
    tokens.push(id);
    start += input.length;
    input = [id];
  }
  const decodeMs = performance.now() - t1;
  for (const c of cache) tf.dispose([c.k, c.v]);
  return { tokens, prefillMs: t1 - t0, decodeMs };
}
