/**
 * Writes a GPT-2 model folder with seeded random weights, in Hugging Face's layout, so that tests,
 * benchmarks and the demo run without downloading anything. The tokenizer is always GPT-2's.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensorsLazy, type FloatDtype, type TensorSpec } from './safetensors.js';
import { gpt2TokenizerJson } from '../model/tokenizer.js';
import { expectedShapes } from './model-folder.js';
import type { Gpt2Config } from '../model/config.js';

export interface MakeModelOptions {
  /** Folder to write (created if needed; files in it are overwritten). */
  out: string;
  /** Default 2. */
  layers?: number;
  /** Default 2. */
  heads?: number;
  /** Default 64; must be divisible by heads. */
  embd?: number;
  /** Context length (n_positions). Default 128. */
  positions?: number;
  /** Default 1: the same seed and shape give the same bytes. */
  seed?: number;
  /** Default F32. */
  dtype?: FloatDtype;
  /** Default 50257 (GPT-2's, which the tokenizer needs to cover every token id). */
  vocab?: number;
}

const GPT2_EOS = 50256;

export async function makeModel(opts: MakeModelOptions): Promise<void> {
  const o = resolveOptions(opts);
  const config: Gpt2Config = {
    vocab_size: o.vocab,
    n_positions: o.positions,
    n_embd: o.embd,
    n_layer: o.layers,
    n_head: o.heads,
    layer_norm_epsilon: 1e-5,
  };
  // An id the vocabulary has: 50256 for GPT-2's vocabulary, the last id for a smaller test one.
  const eos = o.vocab > GPT2_EOS ? GPT2_EOS : o.vocab - 1;
  fs.mkdirSync(o.out, { recursive: true });

  const hfConfig = {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.1,
    bos_token_id: eos,
    embd_pdrop: 0.1,
    eos_token_id: eos,
    initializer_range: 0.02,
    layer_norm_epsilon: config.layer_norm_epsilon,
    model_type: 'gpt2',
    n_ctx: config.n_positions,
    n_embd: config.n_embd,
    n_head: config.n_head,
    n_inner: null,
    n_layer: config.n_layer,
    n_positions: config.n_positions,
    resid_pdrop: 0.1,
    scale_attn_weights: true,
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[o.dtype],
    use_cache: true,
    vocab_size: config.vocab_size,
  };
  writeJson(path.join(o.out, 'config.json'), hfConfig);
  writeJson(path.join(o.out, 'generation_config.json'), { bos_token_id: eos, eos_token_id: eos });
  fs.writeFileSync(path.join(o.out, 'tokenizer.json'), gpt2TokenizerJson());

  const specs: TensorSpec[] = [...expectedShapes(config)].map(([name, shape]) => ({ name, dtype: o.dtype, shape }));
  const shapes = new Map(specs.map((s) => [s.name, s.shape]));
  const scratch = new Float32Array(Math.max(...specs.map((s) => s.shape.reduce((a, b) => a * b, 1))));
  writeSafetensorsLazy(path.join(o.out, 'model.safetensors'), specs, (name) => randomTensor(shapes.get(name)!, name, o.seed, scratch), {
    format: 'pt',
  });
}

/** The options with their defaults; a RangeError for options that do not fit together. */
export function resolveOptions(opts: MakeModelOptions): Required<MakeModelOptions> {
  const o: Required<MakeModelOptions> = {
    out: opts.out,
    layers: opts.layers ?? 2,
    heads: opts.heads ?? 2,
    embd: opts.embd ?? 64,
    positions: opts.positions ?? 128,
    seed: opts.seed ?? 1,
    dtype: opts.dtype ?? 'F32',
    vocab: opts.vocab ?? 50257,
  };
  for (const k of ['layers', 'heads', 'embd', 'positions', 'vocab'] as const) {
    if (!Number.isSafeInteger(o[k]) || o[k] <= 0) throw new RangeError(`${k} must be a positive integer, got ${o[k]}`);
  }
  if (!Number.isSafeInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff)
    throw new RangeError(`seed must be an integer in [0, 2^32), got ${o.seed}`);
  if (o.embd % o.heads !== 0) throw new RangeError(`embd ${o.embd} must be divisible by heads ${o.heads}`);
  if (!['F32', 'F16', 'BF16'].includes(o.dtype)) throw new RangeError(`dtype must be F32, F16 or BF16, got ${o.dtype}`);
  if (!o.out) throw new RangeError('out is required');
  return o;
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * GPT-2's initialisation: normal(0, 0.02) for matrices, biases 0 and layer norms 1 and 0, except
 * that biases and layer norms get a little noise too, so that a forward pass that ignored them (or
 * mixed gain and bias up) would not go unnoticed. Each tensor has its own stream, seeded from the
 * seed and its name, so a tensor's values do not depend on the other tensors.
 * `scratch` is reused from tensor to tensor: on a fresh allocation, first-touch page faults cost
 * more than the numbers themselves.
 */
function randomTensor(shape: number[], name: string, seed: number, scratch: Float32Array): Float32Array {
  const out = scratch.subarray(
    0,
    shape.reduce((a, b) => a * b, 1),
  );
  const isLnGain = /(ln_\d|ln_f)\.weight$/.test(name);
  const std = shape.length === 2 ? 0.02 : isLnGain ? 0.05 : 0.01;
  fillNormal(out, hashSeed(seed, name), isLnGain ? 1 : 0, std);
  return out;
}

/**
 * Normal samples from mulberry32 (a small, well-mixed 32-bit PRNG), two per draw: each 16-bit half
 * indexes a table of the normal's 65536 quantiles. Much faster than Box-Muller (GPT-2 small has
 * 124M weights) and, with no transcendental function in the loop, the same on every platform.
 */
function fillNormal(out: Float32Array, seed: number, mean: number, std: number): void {
  const q = normalQuantiles();
  const n = out.length;
  let s = seed | 0;
  for (let i = 0; i < n; i += 2) {
    s = (s + 0x6d2b79f5) | 0;
    let x = Math.imul(s ^ (s >>> 15), s | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    x ^= x >>> 14;
    out[i] = mean + std * q[x & 0xffff];
    if (i + 1 < n) out[i + 1] = mean + std * q[(x >>> 16) & 0xffff];
  }
}

let quantiles: Float64Array | null = null;

/** Φ⁻¹((k + 0.5) / 65536) for k in [0, 65536), by Acklam's rational approximation (rel. error < 1.2e-9). */
function normalQuantiles(): Float64Array {
  if (quantiles) return quantiles;
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (p: number): number => {
    const t = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1);
  };
  const q = new Float64Array(65536);
  for (let k = 0; k < 65536; k++) {
    const p = (k + 0.5) / 65536;
    if (p < 0.02425) q[k] = tail(p);
    else if (p > 1 - 0.02425) q[k] = -tail(1 - p);
    else {
      const u = p - 0.5;
      const r = u * u;
      q[k] =
        ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * u) /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
  }
  return (quantiles = q);
}

/** FNV-1a over the name, mixed with the seed. */
function hashSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
