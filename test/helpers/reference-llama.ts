/**
 * An independent reference for the Llama-family tests: LlamaForCausalLM / Qwen2ForCausalLM /
 * MistralForCausalLM in plain float64 JavaScript, written from transformers' modeling_llama.py and
 * modeling_rope_utils.py (RMSNorm, rotate_half rotary embeddings with the llama3 frequency
 * adjustment, repeat_kv grouped-query attention, SiLU-gated MLP), with no cache, no padding and no
 * tfjs. Each forward pass recomputes the whole sequence. Nothing here imports the code under test
 * except its data types.
 */
import type { LlamaConfig } from '../../src/model/llama-config.js';
import type { LlamaBlockWeights, LlamaWeights } from '../../src/compiler/types.js';
import { applyRepetitionPenalty, argmax, topGap } from './reference-gpt2.js';

export interface LlamaRefModel {
  config: LlamaConfig;
  weights: LlamaWeights;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * w[i]);
}

/** nn.Linear: y = W x + b, W [out, in] row-major. */
function linear(x: Float64Array, W: Float32Array, b: Float32Array | null, nOut: number): Float64Array {
  const nIn = x.length;
  const y = new Float64Array(nOut);
  for (let o = 0; o < nOut; o++) {
    let s = b ? b[o] : 0;
    const row = o * nIn;
    for (let i = 0; i < nIn; i++) s += W[row + i] * x[i];
    y[o] = s;
  }
  return y;
}

/** _compute_default_rope_parameters, then _compute_llama3_parameters when rope_scaling says llama3. */
export function refInvFreq(c: LlamaConfig): Float64Array {
  const d = c.head_dim;
  const inv = new Float64Array(d / 2);
  for (let i = 0; i < d / 2; i++) inv[i] = 1 / c.rope_theta ** ((2 * i) / d);
  const s = c.rope_scaling;
  if (!s) return inv;
  if (s.rope_type === 'linear') return inv.map((f) => f / s.factor);
  const oldCtx = s.original_max_position_embeddings;
  const lowWavelen = oldCtx / s.low_freq_factor;
  const highWavelen = oldCtx / s.high_freq_factor;
  const out = new Float64Array(inv.length);
  for (let i = 0; i < inv.length; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    // inv_freq_llama = where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    let f = wavelen > lowWavelen ? inv[i] / s.factor : inv[i];
    const smooth = (oldCtx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    const smoothed = ((1 - smooth) * f) / s.factor + smooth * f;
    const isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen);
    if (isMedium) f = smoothed;
    out[i] = f;
  }
  return out;
}

/** q·cos + rotate_half(q)·sin with emb = cat(freqs, freqs), for one head vector at position p. */
function applyRope(x: Float64Array, off: number, d: number, p: number, inv: Float64Array): void {
  const half = d / 2;
  for (let j = 0; j < half; j++) {
    const a = p * inv[j];
    const cos = Math.cos(a);
    const sin = Math.sin(a);
    const x1 = x[off + j];
    const x2 = x[off + j + half];
    x[off + j] = x1 * cos - x2 * sin; // rotate_half puts -x2 in the first half
    x[off + j + half] = x2 * cos + x1 * sin;
  }
}

function layer(xs: Float64Array[], l: LlamaBlockWeights, c: LlamaConfig, inv: Float64Array): Float64Array[] {
  const { hidden_size: E, num_attention_heads: H, num_key_value_heads: KV, head_dim: D, intermediate_size: I } = c;
  const groups = H / KV;
  const T = xs.length;
  const normed = xs.map((x) => rmsNorm(x, l.inputNorm, c.rms_norm_eps));
  const q = normed.map((x) => linear(x, l.qW, l.qB, H * D));
  const k = normed.map((x) => linear(x, l.kW, l.kB, KV * D));
  const v = normed.map((x) => linear(x, l.vW, l.vB, KV * D));
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) applyRope(q[t], h * D, D, t, inv);
    for (let h = 0; h < KV; h++) applyRope(k[t], h * D, D, t, inv);
  }
  const out: Float64Array[] = [];
  for (let t = 0; t < T; t++) {
    const att = new Float64Array(H * D);
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / groups); // repeat_kv: kv head kvh serves query heads kvh*groups .. +groups-1
      const scores = new Float64Array(t + 1);
      let max = -Infinity;
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let e = 0; e < D; e++) dot += q[t][h * D + e] * k[s][kvh * D + e];
        scores[s] = dot / Math.sqrt(D);
        max = Math.max(max, scores[s]);
      }
      let sum = 0;
      for (let s = 0; s <= t; s++) sum += scores[s] = Math.exp(scores[s] - max);
      for (let s = 0; s <= t; s++) for (let e = 0; e < D; e++) att[h * D + e] += (scores[s] / sum) * v[s][kvh * D + e];
    }
    const x = linear(att, l.oW, l.oB, E).map((a, i) => a + xs[t][i]);
    const n2 = rmsNorm(x, l.postNorm, c.rms_norm_eps);
    const gate = linear(n2, l.gateW, l.gateB, I);
    const up = linear(n2, l.upW, l.upB, I);
    const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
    out.push(linear(act, l.downW, l.downB, E).map((a, i) => a + x[i]));
  }
  return out;
}

/** The logits [V] after the last token of `ids` (positions 0..len-1), recomputing everything. */
export function llamaReferenceLogits(m: LlamaRefModel, ids: number[]): Float64Array {
  const c = m.config;
  const w = m.weights;
  const E = c.hidden_size;
  const inv = refInvFreq(c);
  let xs: Float64Array[] = ids.map((id) => Float64Array.from(w.embed.subarray(id * E, (id + 1) * E)));
  for (const l of w.blocks) xs = layer(xs, l, c, inv);
  const h = rmsNorm(xs[xs.length - 1], w.norm, c.rms_norm_eps);
  const head = c.tie_word_embeddings ? w.embed : w.lmHead!;
  return linear(h, head, null, c.vocab_size);
}

/** Greedy decoding with a full recompute each step (repetition penalty as Hugging Face applies it). */
export function llamaReferenceGreedy(
  m: LlamaRefModel,
  prompt: number[],
  o: { maxNewTokens: number; stopIds?: number[]; repetitionPenalty?: number },
): { tokens: number[]; finishReason: 'eos' | 'length'; gaps: number[] } {
  const stops = new Set(o.stopIds ?? []);
  const seq = [...prompt];
  const tokens: number[] = [];
  const gaps: number[] = [];
  for (let t = 0; t < o.maxNewTokens; t++) {
    const s = applyRepetitionPenalty(llamaReferenceLogits(m, seq), seq, o.repetitionPenalty ?? 1);
    const x = argmax(s);
    gaps.push(topGap(s));
    tokens.push(x);
    seq.push(x);
    if (stops.has(x)) return { tokens, finishReason: 'eos', gaps };
  }
  return { tokens, finishReason: 'length', gaps };
}
