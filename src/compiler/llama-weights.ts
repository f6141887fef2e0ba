/**
 * The Llama family's weight names and shapes, as LlamaForCausalLM / Qwen2ForCausalLM /
 * MistralForCausalLM save them (nn.Linear layout [out, in]), checked against a checkpoint and
 * gathered into LlamaWeights.
 */
import type { LlamaConfig } from '../model/llama-config.js';
import { ModelFormatError } from '../shared/errors.js';
import type { Checkpoint } from './checkpoint.js';
import { checkTensors } from './gpt2-weights.js';
import type { FloatTensor } from './safetensors.js';
import type { LlamaBlockWeights, LlamaWeights } from './types.js';

/** Rotary buffers that older checkpoints carry: recomputed from the config, never read. */
const IGNORED = /\.rotary_emb\.inv_freq$/;

export function llamaInclude(name: string): boolean {
  return !IGNORED.test(name);
}

/** Every tensor a checkpoint of this config has (lm_head.weight included even when tied). */
export function llamaShapes(c: LlamaConfig): Map<string, number[]> {
  const E = c.hidden_size;
  const q = c.num_attention_heads * c.head_dim;
  const kv = c.num_key_value_heads * c.head_dim;
  const I = c.intermediate_size;
  const m = new Map<string, number[]>([['model.embed_tokens.weight', [c.vocab_size, E]]]);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    m.set(`${p}input_layernorm.weight`, [E]);
    m.set(`${p}self_attn.q_proj.weight`, [q, E]);
    m.set(`${p}self_attn.k_proj.weight`, [kv, E]);
    m.set(`${p}self_attn.v_proj.weight`, [kv, E]);
    m.set(`${p}self_attn.o_proj.weight`, [E, q]);
    if (c.qkv_bias) {
      m.set(`${p}self_attn.q_proj.bias`, [q]);
      m.set(`${p}self_attn.k_proj.bias`, [kv]);
      m.set(`${p}self_attn.v_proj.bias`, [kv]);
    }
    if (c.o_bias) m.set(`${p}self_attn.o_proj.bias`, [E]);
    m.set(`${p}post_attention_layernorm.weight`, [E]);
    m.set(`${p}mlp.gate_proj.weight`, [I, E]);
    m.set(`${p}mlp.up_proj.weight`, [I, E]);
    m.set(`${p}mlp.down_proj.weight`, [E, I]);
    if (c.mlp_bias) {
      m.set(`${p}mlp.gate_proj.bias`, [I]);
      m.set(`${p}mlp.up_proj.bias`, [I]);
      m.set(`${p}mlp.down_proj.bias`, [E]);
    }
  }
  m.set('model.norm.weight', [E]);
  m.set('lm_head.weight', [c.vocab_size, E]);
  return m;
}

export function llamaWeights(ckpt: Checkpoint, c: LlamaConfig): LlamaWeights {
  const byName: Map<string, FloatTensor> = ckpt.tensors;
  const what = `a ${c.model_type} with num_hidden_layers ${c.num_hidden_layers}${c.qkv_bias ? '' : ' and no attention biases'}`;
  checkTensors(ckpt, byName, llamaShapes(c), new Set(['lm_head.weight']), what);
  if (!c.tie_word_embeddings && !byName.has('lm_head.weight'))
    throw new ModelFormatError(ckpt.file, 'tensor lm_head.weight is missing, and config.json has tie_word_embeddings false');
  const get = (n: string): Float32Array => byName.get(n)!.data;
  const opt = (n: string): Float32Array | null => byName.get(n)?.data ?? null;
  const blocks: LlamaBlockWeights[] = [];
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}.`;
    blocks.push({
      inputNorm: get(`${p}input_layernorm.weight`),
      qW: get(`${p}self_attn.q_proj.weight`),
      qB: opt(`${p}self_attn.q_proj.bias`),
      kW: get(`${p}self_attn.k_proj.weight`),
      kB: opt(`${p}self_attn.k_proj.bias`),
      vW: get(`${p}self_attn.v_proj.weight`),
      vB: opt(`${p}self_attn.v_proj.bias`),
      oW: get(`${p}self_attn.o_proj.weight`),
      oB: opt(`${p}self_attn.o_proj.bias`),
      postNorm: get(`${p}post_attention_layernorm.weight`),
      gateW: get(`${p}mlp.gate_proj.weight`),
      gateB: opt(`${p}mlp.gate_proj.bias`),
      upW: get(`${p}mlp.up_proj.weight`),
      upB: opt(`${p}mlp.up_proj.bias`),
      downW: get(`${p}mlp.down_proj.weight`),
      downB: opt(`${p}mlp.down_proj.bias`),
    });
  }
  return {
    embed: get('model.embed_tokens.weight'),
    norm: get('model.norm.weight'),
    // Tied: transformers points lm_head at the embedding, whatever the file holds under its name.
    lmHead: c.tie_word_embeddings ? null : get('lm_head.weight'),
    blocks,
  };
}
