/**
 * config.json, checked, with errors that name the file and the field: `parseModelConfig` picks the
 * family from `model_type` (GPT-2 when absent, as the oldest GPT-2 folders have none), then the
 * family's own parser reads its fields.
 */
import { ModelFormatError } from '../shared/errors.js';
import { type FamilyName, type ModelArch, gpt2Arch, llamaArch } from './arch.js';
import { configFields } from './config-fields.js';
import { LLAMA_MODEL_TYPES, type LlamaConfig, parseLlamaConfig } from './llama-config.js';

/** A parsed config.json: its family, the family's own fields, and the family-independent sizes. */
export type ModelConfig =
  | { family: 'gpt2'; config: Gpt2Config; arch: ModelArch }
  | { family: 'llama'; config: LlamaConfig; arch: ModelArch };

const SUPPORTED_TYPES = ['gpt2', ...LLAMA_MODEL_TYPES];

export function parseModelConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  const type = raw.model_type ?? 'gpt2';
  if (type === 'gpt2') {
    const config = parseConfig(raw, file);
    return { family: 'gpt2', config, arch: gpt2Arch(config) };
  }
  if ((LLAMA_MODEL_TYPES as readonly unknown[]).includes(type)) {
    const config = parseLlamaConfig(raw, file);
    return { family: 'llama', config, arch: llamaArch(config) };
  }
  throw new ModelFormatError(file, `"model_type" ${JSON.stringify(type)} is not supported (supported: ${SUPPORTED_TYPES.join(', ')})`);
}

export type { FamilyName, ModelArch };

/** The fields of a Hugging Face GPT-2 config.json that the model needs. */
export interface Gpt2Config {
  vocab_size: number;
  n_positions: number;
  n_embd: number;
  n_layer: number;
  n_head: number;
  layer_norm_epsilon: number;
}

/** Gelu variants that are the tanh approximation GPT-2 was trained with (what the forward computes). */
const TANH_GELU = new Set(['gelu_new', 'gelu_pytorch_tanh']);

export function parseConfig(raw: Record<string, unknown>, file = 'config.json'): Gpt2Config {
  const { fail, positiveInt } = configFields(file);
  if (raw.model_type !== undefined && raw.model_type !== 'gpt2')
    fail(`model_type "${String(raw.model_type)}" is not supported (only gpt2)`);
  const vocab_size = positiveInt('vocab_size', raw.vocab_size);
  // n_ctx is the old name of n_positions; some early configs only have it.
  const n_positions = positiveInt(raw.n_positions !== undefined ? 'n_positions' : 'n_positions (or n_ctx)', raw.n_positions ?? raw.n_ctx);
  const n_embd = positiveInt('n_embd', raw.n_embd);
  const n_layer = positiveInt('n_layer', raw.n_layer);
  const n_head = positiveInt('n_head', raw.n_head);
  if (n_embd % n_head !== 0) fail(`n_embd ${n_embd} is not divisible by n_head ${n_head}`);
  const eps = raw.layer_norm_epsilon ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0)) fail(`"layer_norm_epsilon" must be a positive number, got ${JSON.stringify(eps)}`);

  // Options that change the forward pass: refused rather than silently computed another way.
  const act = raw.activation_function ?? 'gelu_new';
  if (typeof act !== 'string' || !TANH_GELU.has(act)) fail(`activation_function ${JSON.stringify(act)} is not supported (only gelu_new)`);
  if (raw.n_inner !== undefined && raw.n_inner !== null && raw.n_inner !== 4 * n_embd)
    fail(`n_inner ${JSON.stringify(raw.n_inner)} is not supported (only 4 * n_embd)`);
  if (raw.scale_attn_weights === false) fail('scale_attn_weights false is not supported');
  if (raw.scale_attn_by_inverse_layer_idx === true) fail('scale_attn_by_inverse_layer_idx true is not supported');
  if (raw.add_cross_attention === true) fail('add_cross_attention true is not supported');
  return { vocab_size, n_positions, n_embd, n_layer, n_head, layer_norm_epsilon: eps as number };
}
