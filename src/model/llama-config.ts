/**
 * config.json of a Llama-family folder (`LlamaForCausalLM`, `Qwen2ForCausalLM`,
 * `MistralForCausalLM`), checked field by field with errors that name the file and the field. What
 * the three share is one forward (RMSNorm, rotary embeddings, grouped-query attention, SiLU-gated
 * MLP); they differ in which projections carry a bias and in the sliding window.
 */
import { configFields } from './config-fields.js';

export const LLAMA_MODEL_TYPES = ['llama', 'qwen2', 'mistral'] as const;
export type LlamaModelType = (typeof LLAMA_MODEL_TYPES)[number];

/** `rope_scaling` of type llama3 (Llama 3.1 / 3.2), as modeling_rope_utils.py reads it. */
export interface Llama3RopeScaling {
  rope_type: 'llama3';
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}
/** `rope_scaling` of type linear: positions divided by `factor`. */
export interface LinearRopeScaling {
  rope_type: 'linear';
  factor: number;
}
export type RopeScaling = Llama3RopeScaling | LinearRopeScaling;

export interface LlamaConfig {
  model_type: LlamaModelType;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  /** Grouped-query attention: query heads share key/value heads in groups of heads / kv_heads. */
  num_key_value_heads: number;
  head_dim: number;
  max_position_embeddings: number;
  rms_norm_eps: number;
  rope_theta: number;
  rope_scaling: RopeScaling | null;
  /** q, k and v projections have biases (Qwen2 always; Llama when attention_bias). */
  qkv_bias: boolean;
  /** o_proj has a bias (Llama when attention_bias). */
  o_bias: boolean;
  /** gate, up and down projections have biases (Llama's mlp_bias). */
  mlp_bias: boolean;
  tie_word_embeddings: boolean;
  /** The attention window when one applies (Mistral; Qwen2 with use_sliding_window), else null. */
  sliding_window: number | null;
}

export function parseLlamaConfig(raw: Record<string, unknown>, file: string): LlamaConfig {
  // Each field read from raw, or its default when absent.
  const f = configFields(file);
  const fail = f.fail;
  const positiveInt = (key: string, fallback?: number) => f.positiveInt(key, raw[key] ?? fallback);
  const positiveNumber = (key: string, fallback: number) => f.positiveNumber(key, raw[key] ?? fallback);
  const flag = (key: string, fallback: boolean) => f.flag(key, raw[key] ?? fallback);
  const modelType = raw.model_type as LlamaModelType;
  const hidden = positiveInt('hidden_size');
  const heads = positiveInt('num_attention_heads');
  const kvHeads = positiveInt('num_key_value_heads', heads);
  if (heads % kvHeads !== 0) fail(`num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  if (raw.head_dim === undefined && hidden % heads !== 0)
    fail(`hidden_size ${hidden} is not divisible by num_attention_heads ${heads} (and there is no "head_dim")`);
  const headDim = positiveInt('head_dim', Math.floor(hidden / heads));
  if (headDim % 2 !== 0) fail(`head_dim ${headDim} must be even (rotary embeddings rotate pairs)`);
  const act = raw.hidden_act ?? 'silu';
  if (act !== 'silu') fail(`hidden_act ${JSON.stringify(act)} is not supported (only silu)`);
  if (raw.partial_rotary_factor !== undefined && raw.partial_rotary_factor !== 1)
    fail(`partial_rotary_factor ${JSON.stringify(raw.partial_rotary_factor)} is not supported (only 1)`);
  const attentionBias = flag('attention_bias', false);
  const maxPositions = positiveInt('max_position_embeddings');
  return {
    model_type: modelType,
    vocab_size: positiveInt('vocab_size'),
    hidden_size: hidden,
    intermediate_size: positiveInt('intermediate_size'),
    num_hidden_layers: positiveInt('num_hidden_layers'),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    max_position_embeddings: maxPositions,
    rms_norm_eps: positiveNumber('rms_norm_eps', 1e-6),
    rope_theta: positiveNumber('rope_theta', 10000),
    rope_scaling: parseRopeScaling(raw.rope_scaling, fail),
    qkv_bias: modelType === 'qwen2' || (modelType === 'llama' && attentionBias),
    o_bias: modelType === 'llama' && attentionBias,
    mlp_bias: modelType === 'llama' && flag('mlp_bias', false),
    // Llama and Mistral default to an untied lm_head, Qwen2's config class too; small Qwen2.5 and
    // SmolLM2 checkpoints set it true.
    tie_word_embeddings: flag('tie_word_embeddings', false),
    sliding_window: slidingWindow(raw, modelType, fail),
  };
}

function slidingWindow(raw: Record<string, unknown>, modelType: LlamaModelType, fail: (p: string) => never): number | null {
  if (modelType === 'llama') return null;
  // Qwen2 has the field but applies it only with use_sliding_window (false in every Qwen2.5 release).
  if (modelType === 'qwen2' && raw.use_sliding_window !== true) return null;
  const w = raw.sliding_window;
  if (w === undefined || w === null) return null;
  if (typeof w !== 'number' || !Number.isSafeInteger(w) || w <= 0)
    fail(`"sliding_window" must be a positive integer or null, got ${JSON.stringify(w)}`);
  return w as number;
}

/** rope_scaling: null, or a type this forward computes; any other type is refused by name. */
function parseRopeScaling(value: unknown, fail: (p: string) => never): RopeScaling | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) fail(`"rope_scaling" must be an object or null, got ${JSON.stringify(value)}`);
  const s = value as Record<string, unknown>;
  // "type" is the older name of "rope_type" (modeling_rope_utils reads both).
  const type = s.rope_type ?? s.type;
  const num = (key: string): number => {
    const v = s[key];
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v))
      fail(`"rope_scaling.${key}" must be a positive number, got ${JSON.stringify(v)}`);
    return v as number;
  };
  if (type === 'default') return null;
  if (type === 'linear') return { rope_type: 'linear', factor: num('factor') };
  if (type === 'llama3') {
    const r: Llama3RopeScaling = {
      rope_type: 'llama3',
      factor: num('factor'),
      low_freq_factor: num('low_freq_factor'),
      high_freq_factor: num('high_freq_factor'),
      original_max_position_embeddings: num('original_max_position_embeddings'),
    };
    if (r.high_freq_factor <= r.low_freq_factor)
      fail(`"rope_scaling.high_freq_factor" ${r.high_freq_factor} must be above low_freq_factor ${r.low_freq_factor}`);
    return r;
  }
  return fail(
    `"rope_scaling" of type ${JSON.stringify(type)} is not supported (supported: llama3, linear, default; not dynamic, yarn, longrope, ntk)`,
  );
}

/**
 * The rotary inverse frequencies, float64, as modeling_rope_utils computes them for this config:
 * 1 / theta^(2i / head_dim), then the llama3 or linear adjustment.
 */
export function ropeInverseFrequencies(c: Pick<LlamaConfig, 'head_dim' | 'rope_theta' | 'rope_scaling'>): Float64Array {
  const half = c.head_dim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / c.rope_theta ** ((2 * i) / c.head_dim);
  const s = c.rope_scaling;
  if (s === null) return inv;
  if (s.rope_type === 'linear') return inv.map((f) => f / s.factor);
  const lowWavelen = s.original_max_position_embeddings / s.low_freq_factor;
  const highWavelen = s.original_max_position_embeddings / s.high_freq_factor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f; // high frequency: kept
    if (wavelen > lowWavelen) return f / s.factor; // low frequency: scaled
    const smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}
