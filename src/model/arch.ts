/**
 * What the rest of the system needs to know of a model, whatever its family: sizes for the KV cache,
 * memory estimates and benchmarks, and the context that bounds every compile key. One function per
 * family turns its config into this; nothing outside the family reads the family's own fields.
 */
import type { Gpt2Config } from './config.js';
import type { LlamaConfig } from './llama-config.js';

export type FamilyName = 'gpt2' | 'llama';

export interface ModelArch {
  family: FamilyName;
  /** config.json's model_type (gpt2, llama, qwen2, mistral). */
  modelType: string;
  vocabSize: number;
  /** The longest prompt + new tokens the model can attend over (its positions, or a sliding window). */
  contextLength: number;
  layers: number;
  hidden: number;
  heads: number;
  /** Key/value heads: what the KV cache holds (equal to heads without grouped-query attention). */
  kvHeads: number;
  headDim: number;
  /** Width of the MLP's hidden layer. */
  intermediate: number;
  /** Parameters, counted from the shapes (a tied lm_head counted once). */
  params: number;
  /** Parameters in the weight matrices of matmuls (every projection and the output head; not the embedding tables). */
  matmulParams: number;
  /** The attention window (Mistral), which bounds contextLength; null when attention sees everything. */
  slidingWindow: number | null;
  /** The output projection is the token embedding (stored a second time, transposed, on the device). */
  tied: boolean;
}

/** Bytes of float32 weights on the device: the parameters, and the transposed copy of a tied embedding. */
export function deviceWeightBytes(a: ModelArch): number {
  return 4 * (a.params + (a.tied ? a.vocabSize * a.hidden : 0));
}

export function gpt2Arch(c: Gpt2Config): ModelArch {
  const E = c.n_embd;
  const perLayer = 12 * E * E + 13 * E; // attention 4E², MLP 8E², biases and norms
  return {
    family: 'gpt2',
    modelType: 'gpt2',
    vocabSize: c.vocab_size,
    contextLength: c.n_positions,
    layers: c.n_layer,
    hidden: E,
    heads: c.n_head,
    kvHeads: c.n_head,
    headDim: E / c.n_head,
    intermediate: 4 * E,
    params: c.vocab_size * E + c.n_positions * E + c.n_layer * perLayer + 2 * E,
    matmulParams: c.n_layer * 12 * E * E + c.vocab_size * E,
    slidingWindow: null,
    // GPT-2's device weights always hold the output projection transposed, tied or not.
    tied: true,
  };
}

export function llamaArch(c: LlamaConfig): ModelArch {
  const E = c.hidden_size;
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  const I = c.intermediate_size;
  const attention = E * q + 2 * E * kv + q * E + (c.qkv_bias ? q + 2 * kv : 0) + (c.o_bias ? E : 0);
  const mlp = 3 * E * I + (c.mlp_bias ? 2 * I + E : 0);
  const embeddings = c.vocab_size * E * (c.tie_word_embeddings ? 1 : 2);
  return {
    family: 'llama',
    modelType: c.model_type,
    vocabSize: c.vocab_size,
    contextLength: Math.min(c.max_position_embeddings, c.sliding_window ?? Number.POSITIVE_INFINITY),
    layers: c.num_hidden_layers,
    hidden: E,
    heads: c.num_attention_heads,
    kvHeads: c.num_key_value_heads,
    headDim: c.head_dim,
    intermediate: I,
    params: embeddings + c.num_hidden_layers * (attention + mlp + 2 * E) + E,
    matmulParams: c.num_hidden_layers * (E * q + 2 * E * kv + q * E + 3 * E * I) + c.vocab_size * E,
    slidingWindow: c.sliding_window,
    tied: c.tie_word_embeddings,
  };
}
