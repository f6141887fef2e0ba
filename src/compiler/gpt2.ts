/**
 * GPT-2 in tfjs-core ops, read top to bottom: weights on the device, then one small function per
 * part (layer norm, attention, mlp, block), then the two forward passes that generation uses:
 * `prefill` (the whole left-padded prompt, filling the KV cache) and `decodeStep` (one token per row,
 * writing one cache position). Every function here is synchronous and meant to run inside tf.tidy.
 */
import { tf } from './backend.js';
import { gpt2Arch, type ModelArch } from '../model/arch.js';
import type { Gpt2Config } from '../model/config.js';
import type { DeviceModel } from './family.js';
import type { Gpt2Weights } from './types.js';
import type { KvCache } from './kv-cache.js';
import { cacheAttention } from './attention.js';
import { gelu, layerNorm } from './fused.js';

export interface DeviceBlock {
  ln1g: tf.Tensor1D;
  ln1b: tf.Tensor1D;
  /** c_attn split into query, key and value projections ([E, E] each), so no activation is split. */
  qW: tf.Tensor2D;
  qB: tf.Tensor1D;
  kW: tf.Tensor2D;
  kB: tf.Tensor1D;
  vW: tf.Tensor2D;
  vB: tf.Tensor1D;
  projW: tf.Tensor2D;
  projB: tf.Tensor1D;
  ln2g: tf.Tensor1D;
  ln2b: tf.Tensor1D;
  fcW: tf.Tensor2D;
  fcB: tf.Tensor1D;
  fcProjW: tf.Tensor2D;
  fcProjB: tf.Tensor1D;
}

/** Columns [from, to) of a row-major [rows, cols] matrix. */
function columns(m: Float32Array, rows: number, cols: number, from: number, to: number): Float32Array {
  const out = new Float32Array(rows * (to - from));
  for (let r = 0; r < rows; r++) out.set(m.subarray(r * cols + from, r * cols + to), r * (to - from));
  return out;
}

/** The model's weights on the device; owned by this object, freed by dispose(). */
export class DeviceWeights implements DeviceModel {
  readonly arch: ModelArch;
  readonly wte: tf.Tensor2D;
  readonly wpe: tf.Tensor2D;
  readonly lnFg: tf.Tensor1D;
  readonly lnFb: tf.Tensor1D;
  /**
   * [E, V]: the output projection (lm_head, or wte when tied) stored transposed, the layout of the
   * fast matmul path. Costs a copy of wte; (wte @ hᵀ)ᵀ would avoid it, but is 3x slower at one row.
   */
  readonly lmHeadT: tf.Tensor2D;
  readonly blocks: DeviceBlock[];

  constructor(
    readonly config: Gpt2Config,
    w: Gpt2Weights,
  ) {
    const { n_embd: E, vocab_size: V, n_positions: T } = config;
    this.arch = gpt2Arch(config);
    this.wte = tf.tensor2d(w.wte, [V, E]);
    this.wpe = tf.tensor2d(w.wpe, [T, E]);
    this.lnFg = tf.tensor1d(w.lnFg);
    this.lnFb = tf.tensor1d(w.lnFb);
    this.lmHeadT = tf.tidy(() => tf.transpose(w.lmHead ? tf.tensor2d(w.lmHead, [V, E]) : this.wte) as tf.Tensor2D);
    this.blocks = w.blocks.map((b) => ({
      ln1g: tf.tensor1d(b.ln1g),
      ln1b: tf.tensor1d(b.ln1b),
      qW: tf.tensor2d(columns(b.attnW, E, 3 * E, 0, E), [E, E]),
      qB: tf.tensor1d(b.attnB.subarray(0, E)),
      kW: tf.tensor2d(columns(b.attnW, E, 3 * E, E, 2 * E), [E, E]),
      kB: tf.tensor1d(b.attnB.subarray(E, 2 * E)),
      vW: tf.tensor2d(columns(b.attnW, E, 3 * E, 2 * E, 3 * E), [E, E]),
      vB: tf.tensor1d(b.attnB.subarray(2 * E, 3 * E)),
      projW: tf.tensor2d(b.projW, [E, E]),
      projB: tf.tensor1d(b.projB),
      ln2g: tf.tensor1d(b.ln2g),
      ln2b: tf.tensor1d(b.ln2b),
      fcW: tf.tensor2d(b.fcW, [E, 4 * E]),
      fcB: tf.tensor1d(b.fcB),
      fcProjW: tf.tensor2d(b.fcProjW, [4 * E, E]),
      fcProjB: tf.tensor1d(b.fcProjB),
    }));
  }

  get bytes(): number {
    let n = this.wte.size + this.wpe.size + this.lmHeadT.size + this.lnFg.size * 2;
    for (const b of this.blocks) for (const t of Object.values(b)) n += (t as tf.Tensor).size;
    return n * 4;
  }

  prefill(cache: KvCache, ids: tf.Tensor2D, pos: tf.Tensor2D, keyBias: tf.Tensor4D): tf.Tensor2D {
    return prefill(this, cache, ids, pos, keyBias);
  }

  decodeStep(cache: KvCache, ids: tf.Tensor1D, pos: tf.Tensor1D, slot: number, keyBias: tf.Tensor3D): tf.Tensor2D {
    return decodeStep(this, cache, ids, pos, slot, keyBias);
  }

  dispose(): void {
    tf.dispose([this.wte, this.wpe, this.lnFg, this.lnFb, this.lmHeadT]);
    for (const b of this.blocks) tf.dispose(Object.values(b));
  }
}

// ---- parts -------------------------------------------------------------------------------------

/**
 * x [M, in] @ w [in, out] + b, bias fused into the matmul: the only matmul shape that takes the fast
 * (XNNPACK) path on wasm.
 */
function linear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D {
  return tf.fused.matMul({ a: x, b: w, bias: b }) as tf.Tensor2D;
}

function mlp(x: tf.Tensor2D, blk: DeviceBlock): tf.Tensor2D {
  return linear(gelu(linear(x, blk.fcW, blk.fcB)) as tf.Tensor2D, blk.fcProjW, blk.fcProjB);
}

/** Logits [M, V] of the last hidden states [M, E]: final layer norm, then the output projection. */
export function logits(w: DeviceWeights, h: tf.Tensor2D): tf.Tensor2D {
  return tf.matMul(layerNorm(h, w.lnFg, w.lnFb, w.config.layer_norm_epsilon) as tf.Tensor2D, w.lmHeadT);
}

/** Token plus position embeddings for ids and positions of the same shape. */
function embed(w: DeviceWeights, ids: tf.Tensor, pos: tf.Tensor): tf.Tensor {
  return tf.add(tf.gather(w.wte, ids), tf.gather(w.wpe, pos));
}

/**
 * Attention of every prompt position, [R, H, P, D], as batched matmul. (On wasm that takes a scalar
 * path; broadcast multiply-and-sum was measured slower here, as slicing rows to bound its memory
 * copies whole tensors.)
 */
function promptAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, keyBias: tf.Tensor4D, D: number): tf.Tensor4D {
  const scores = tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(D)), keyBias);
  return tf.matMul(tf.softmax(scores), v);
}

// ---- prefill -----------------------------------------------------------------------------------

/**
 * The whole prompt at once. ids, pos: [R, P] int32 (left padded, positions from the mask);
 * keyBias: [R, 1, P, P] additive mask (0 where a query may attend a key: causal and not padding).
 * Writes keys and values into cache positions [0, P) and returns the last position's logits [R, V].
 */
export function prefill(w: DeviceWeights, cache: KvCache, ids: tf.Tensor2D, pos: tf.Tensor2D, keyBias: tf.Tensor4D): tf.Tensor2D {
  const { n_embd: E, n_head: H, layer_norm_epsilon: eps } = w.config;
  const [R, P] = ids.shape;
  const D = E / H;
  let h = tf.reshape(embed(w, ids, pos), [R * P, E]) as tf.Tensor2D;
  // One tidy per layer: the prompt's intermediates are large, and must not pile up over layers.
  w.blocks.forEach(
    (blk, layer) =>
      (h = tf.tidy(() => {
        const a = layerNorm(h, blk.ln1g, blk.ln1b, eps) as tf.Tensor2D;
        // [R*P, E] -> [R, H, P, D]
        const heads = (t: tf.Tensor) => tf.transpose(tf.reshape(t, [R, P, H, D]), [0, 2, 1, 3]) as tf.Tensor4D;
        const q = heads(linear(a, blk.qW, blk.qB));
        const k = heads(linear(a, blk.kW, blk.kB));
        const v = heads(linear(a, blk.vW, blk.vB));
        cache.writePrefill(layer, k, v);
        const att = promptAttention(q, k, v, keyBias, D); // [R, H, P, D]
        const merged = tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [R * P, E]) as tf.Tensor2D;
        const x = tf.add(h, linear(merged, blk.projW, blk.projB)) as tf.Tensor2D;
        return tf.add(x, mlp(layerNorm(x, blk.ln2g, blk.ln2b, eps) as tf.Tensor2D, blk)) as tf.Tensor2D;
      })),
  );
  const last = tf.reshape(tf.slice(tf.reshape(h, [R, P, E]), [0, P - 1, 0], [R, 1, E]), [R, E]) as tf.Tensor2D;
  return logits(w, last);
}

// ---- one decode step ---------------------------------------------------------------------------

/**
 * One new token per row. ids, pos: [R] int32; slot: the cache position this step writes (the same for
 * every row, as prompts are left padded to one length); keyBias: [R, 1, T] additive mask over all
 * cache positions. Attention over the cache: attention.ts.
 */
export function decodeStep(
  w: DeviceWeights,
  cache: KvCache,
  ids: tf.Tensor1D,
  pos: tf.Tensor1D,
  slot: number,
  keyBias: tf.Tensor3D,
): tf.Tensor2D {
  const { n_head: H, layer_norm_epsilon: eps } = w.config;
  let h = embed(w, ids, pos) as tf.Tensor2D; // [R, E]
  w.blocks.forEach((blk, layer) => {
    const a = layerNorm(h, blk.ln1g, blk.ln1b, eps) as tf.Tensor2D;
    const q = linear(a, blk.qW, blk.qB);
    cache.writeStep(layer, slot, linear(a, blk.kW, blk.kB), linear(a, blk.vW, blk.vB));
    const { k: kc, vt } = cache.layer(layer); // [R, H, T, D], [R, H, D, T]
    const att = cacheAttention(q, kc, vt, keyBias, H);
    h = tf.add(h, linear(att, blk.projW, blk.projB));
    h = tf.add(h, mlp(layerNorm(h, blk.ln2g, blk.ln2b, eps) as tf.Tensor2D, blk));
  });
  return logits(w, h);
}
