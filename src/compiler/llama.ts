/**
 * The Llama family (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM) in tfjs-core ops, read
 * top to bottom as transformers' modeling_llama.py: RMSNorm, rotary embeddings in the half-split
 * (`rotate_half`) layout, grouped-query attention over a cache of the key/value heads only, and the
 * SiLU-gated MLP. Every function here is synchronous and meant to run inside tf.tidy.
 */
import { tf } from './backend.js';
import { llamaArch, type ModelArch } from '../model/arch.js';
import { type LlamaConfig, ropeInverseFrequencies } from '../model/llama-config.js';
import type { DeviceModel } from './family.js';
import type { KvCache } from './kv-cache.js';
import { cacheAttention } from './attention.js';
import { rmsNorm, rotate, siluMul } from './fused.js';
import type { LlamaWeights } from './types.js';

interface Linear {
  /** [in, out]: nn.Linear's [out, in] transposed once at load, the layout of the fast matmul path. */
  w: tf.Tensor2D;
  b: tf.Tensor1D | null;
}

interface DeviceLayer {
  inputNorm: tf.Tensor1D;
  q: Linear;
  k: Linear;
  v: Linear;
  o: Linear;
  postNorm: tf.Tensor1D;
  gate: Linear;
  up: Linear;
  down: Linear;
}

/** The model's weights on the device; owned by this object, freed by dispose(). */
export class LlamaDevice implements DeviceModel {
  readonly arch: ModelArch;
  readonly embed: tf.Tensor2D;
  readonly norm: tf.Tensor1D;
  /** [E, V]: lm_head (or the embedding, when tied) transposed. */
  readonly lmHeadT: tf.Tensor2D;
  /** [head_dim / 2] rotary inverse frequencies (rope_theta, rope_scaling applied). */
  readonly invFreq: tf.Tensor1D;
  readonly layers: DeviceLayer[];

  constructor(
    readonly config: LlamaConfig,
    w: LlamaWeights,
  ) {
    this.arch = llamaArch(config);
    const { hidden_size: E, vocab_size: V, intermediate_size: I, head_dim: D } = config;
    const q = config.num_attention_heads * D;
    const kv = config.num_key_value_heads * D;
    const linear = (weight: Float32Array, out: number, inp: number, bias: Float32Array | null): Linear => ({
      w: tf.tidy(() => tf.transpose(tf.tensor2d(weight, [out, inp])) as tf.Tensor2D),
      b: bias ? tf.tensor1d(bias) : null,
    });
    this.embed = tf.tensor2d(w.embed, [V, E]);
    this.norm = tf.tensor1d(w.norm);
    this.lmHeadT = tf.tidy(() => tf.transpose(w.lmHead ? tf.tensor2d(w.lmHead, [V, E]) : this.embed) as tf.Tensor2D);
    this.invFreq = tf.tensor1d(Float32Array.from(ropeInverseFrequencies(config)));
    this.layers = w.blocks.map((b) => ({
      inputNorm: tf.tensor1d(b.inputNorm),
      q: linear(b.qW, q, E, b.qB),
      k: linear(b.kW, kv, E, b.kB),
      v: linear(b.vW, kv, E, b.vB),
      o: linear(b.oW, E, q, b.oB),
      postNorm: tf.tensor1d(b.postNorm),
      gate: linear(b.gateW, I, E, b.gateB),
      up: linear(b.upW, I, E, b.upB),
      down: linear(b.downW, E, I, b.downB),
    }));
  }

  private tensors(): tf.Tensor[] {
    const out: tf.Tensor[] = [this.embed, this.norm, this.lmHeadT, this.invFreq];
    for (const l of this.layers) {
      out.push(l.inputNorm, l.postNorm);
      for (const lin of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) out.push(lin.w, ...(lin.b ? [lin.b] : []));
    }
    return out;
  }

  get bytes(): number {
    return this.tensors().reduce((n, t) => n + t.size * 4, 0);
  }

  prefill(cache: KvCache, ids: tf.Tensor2D, pos: tf.Tensor2D, keyBias: tf.Tensor4D): tf.Tensor2D {
    return prefill(this, cache, ids, pos, keyBias);
  }

  decodeStep(cache: KvCache, ids: tf.Tensor1D, pos: tf.Tensor1D, slot: number, keyBias: tf.Tensor3D): tf.Tensor2D {
    return decodeStep(this, cache, ids, pos, slot, keyBias);
  }

  dispose(): void {
    tf.dispose(this.tensors());
  }
}

// ---- parts -------------------------------------------------------------------------------------

/** x [M, in] @ w [in, out] (+ b): the bias fused into the matmul when there is one. */
function linear(x: tf.Tensor2D, l: Linear): tf.Tensor2D {
  return (l.b ? tf.fused.matMul({ a: x, b: l.w, bias: l.b }) : tf.matMul(x, l.w)) as tf.Tensor2D;
}

/** down(silu(gate(x)) · up(x)). */
function mlp(x: tf.Tensor2D, l: DeviceLayer): tf.Tensor2D {
  const g = linear(x, l.gate);
  return linear(siluMul(g, linear(x, l.up)) as tf.Tensor2D, l.down);
}

/**
 * cos and sin of position × inverse frequency, [...pos.shape, 1, D/2]: one half of transformers'
 * `cat(freqs, freqs)`, which repeats them for both halves of a head.
 */
function rotaryAngles(m: LlamaDevice, pos: tf.Tensor): { cos: tf.Tensor; sin: tf.Tensor } {
  const angles = tf.mul(tf.expandDims(tf.expandDims(tf.cast(pos, 'float32'), -1), -1), m.invFreq);
  return { cos: tf.cos(angles), sin: tf.sin(angles) };
}

/** Logits [M, V] of the last hidden states [M, E]: the final norm, then the output projection. */
function logits(m: LlamaDevice, h: tf.Tensor2D): tf.Tensor2D {
  return tf.matMul(rmsNorm(h, m.norm, m.config.rms_norm_eps) as tf.Tensor2D, m.lmHeadT);
}

// ---- prefill -----------------------------------------------------------------------------------

/**
 * The whole prompt at once (see DeviceModel.prefill). Query heads are grouped by the key/value head
 * they share (head h uses kv head ⌊h / G⌋, as repeat_kv lays them out), so one batched matmul per
 * (row, kv head) covers the G query heads of its group without copying keys G times.
 */
export function prefill(m: LlamaDevice, cache: KvCache, ids: tf.Tensor2D, pos: tf.Tensor2D, keyBias: tf.Tensor4D): tf.Tensor2D {
  const c = m.config;
  const { num_attention_heads: H, num_key_value_heads: KV, head_dim: D, hidden_size: E } = c;
  const [R, P] = ids.shape;
  const G = H / KV;
  const scale = 1 / Math.sqrt(D);
  let h = tf.reshape(tf.gather(m.embed, ids), [R * P, E]) as tf.Tensor2D;
  const rope = rotaryAngles(m, pos); // [R, P, 1, D/2]
  m.layers.forEach(
    (l, layer) =>
      (h = tf.tidy(() => {
        const a = rmsNorm(h, l.inputNorm, c.rms_norm_eps) as tf.Tensor2D;
        // [R*P, n*D] -> rotated [R, n, P, D]
        const heads = (t: tf.Tensor, n: number, rotary: boolean) => {
          const x = tf.reshape(t, [R, P, n, D]);
          return tf.transpose(rotary ? rotate(x, rope.cos, rope.sin) : x, [0, 2, 1, 3]) as tf.Tensor4D;
        };
        const q = heads(linear(a, l.q), H, true);
        const k = heads(linear(a, l.k), KV, true);
        const v = heads(linear(a, l.v), KV, false);
        cache.writePrefill(layer, k, v);
        const qg = tf.reshape(q, [R * KV, G * P, D]);
        const scores = tf.reshape(tf.matMul(qg, tf.reshape(k, [R * KV, P, D]), false, true), [R, H, P, P]);
        const probs = tf.softmax(tf.add(tf.mul(scores, scale), keyBias));
        const att = tf.reshape(tf.matMul(tf.reshape(probs, [R * KV, G * P, P]), tf.reshape(v, [R * KV, P, D])), [R, H, P, D]);
        const merged = tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [R * P, H * D]) as tf.Tensor2D;
        const x = tf.add(h, linear(merged, l.o)) as tf.Tensor2D;
        return tf.add(x, mlp(rmsNorm(x, l.postNorm, c.rms_norm_eps) as tf.Tensor2D, l)) as tf.Tensor2D;
      })),
  );
  const last = tf.reshape(tf.slice(tf.reshape(h, [R, P, E]), [0, P - 1, 0], [R, 1, E]), [R, E]) as tf.Tensor2D;
  return logits(m, last);
}

// ---- one decode step ---------------------------------------------------------------------------

/**
 * One new token per row (see DeviceModel.decodeStep). Attention over the cache, grouped-query
 * included: attention.ts.
 */
export function decodeStep(
  m: LlamaDevice,
  cache: KvCache,
  ids: tf.Tensor1D,
  pos: tf.Tensor1D,
  slot: number,
  keyBias: tf.Tensor3D,
): tf.Tensor2D {
  const c = m.config;
  const { num_attention_heads: H, num_key_value_heads: KV, head_dim: D } = c;
  const R = ids.shape[0];
  const rope = rotaryAngles(m, pos); // [R, 1, D/2]
  let h = tf.gather(m.embed, ids) as tf.Tensor2D; // [R, E]
  m.layers.forEach((l, layer) => {
    const a = rmsNorm(h, l.inputNorm, c.rms_norm_eps) as tf.Tensor2D;
    const q = rotate(tf.reshape(linear(a, l.q), [R, H, D]), rope.cos, rope.sin);
    const k = rotate(tf.reshape(linear(a, l.k), [R, KV, D]), rope.cos, rope.sin);
    cache.writeStep(layer, slot, tf.reshape(k, [R, KV * D]), linear(a, l.v));
    const { k: kc, vt } = cache.layer(layer); // [R, KV, T, D], [R, KV, D, T]
    const att = cacheAttention(tf.reshape(q, [R, H * D]), kc, vt, keyBias, H);
    h = tf.add(h, linear(att, l.o));
    h = tf.add(h, mlp(rmsNorm(h, l.postNorm, c.rms_norm_eps) as tf.Tensor2D, l));
  });
  return logits(m, h);
}
