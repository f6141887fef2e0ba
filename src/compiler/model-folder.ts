/**
 * Reads a GPT-2 model folder in Hugging Face's layout: config.json, model.safetensors,
 * tokenizer.json and an optional generation_config.json. Everything is checked, with an error that
 * names the file and the culprit. Weights are only ever read from safetensors: pickles
 * (pytorch_model.bin, *.pt, ...) can run code when loaded, so they are refused, never opened.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelFormatError } from '../shared/errors.js';
import { GenerationParams, type GenerationDefaults } from '../shared/params.js';
import { readSafetensors, type FloatTensor } from './safetensors.js';
import { loadTokenizer } from './tokenizer.js';
import type { Gpt2BlockWeights, Gpt2Config, Gpt2Weights, ModelFolder } from './types.js';

export async function readModelFolder(dir: string): Promise<ModelFolder> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw new ModelFormatError(dir, 'model folder not found');
  }
  if (!stat.isDirectory()) throw new ModelFormatError(dir, 'not a folder (a model is a folder with config.json, model.safetensors and tokenizer.json)');

  const raw = readJson(path.join(dir, 'config.json'), true)!;
  const config = parseConfig(raw, path.join(dir, 'config.json'));
  const weightsFile = findWeights(dir);
  const weights = loadWeights(weightsFile, config);
  const tokenizer = await loadTokenizer(path.join(dir, 'tokenizer.json'));
  const genFile = path.join(dir, 'generation_config.json');
  const defaults = parseGenerationDefaults(readJson(genFile, false) ?? {}, raw, config.vocab_size, genFile);
  return { dir, config, weights, tokenizer, defaults };
}

function readJson(file: string, required: boolean): Record<string, unknown> | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf-8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      if (!required) return null;
      throw new ModelFormatError(file, 'file not found');
    }
    throw new ModelFormatError(file, `cannot read (${(e as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ModelFormatError(file, 'not a JSON object');
  return value as Record<string, unknown>;
}

// ---- config.json ----

/** Gelu variants that are the tanh approximation GPT-2 was trained with (what the forward computes). */
const TANH_GELU = new Set(['gelu_new', 'gelu_pytorch_tanh']);

export function parseConfig(raw: Record<string, unknown>, file = 'config.json'): Gpt2Config {
  const fail = (problem: string): never => {
    throw new ModelFormatError(file, problem);
  };
  const positiveInt = (key: string, value: unknown): number => {
    if (value === undefined || value === null) fail(`missing required field "${key}"`);
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) fail(`"${key}" must be a positive integer, got ${JSON.stringify(value)}`);
    return value as number;
  };
  if (raw.model_type !== undefined && raw.model_type !== 'gpt2') fail(`model_type "${String(raw.model_type)}" is not supported (only gpt2)`);
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
  if (raw.n_inner !== undefined && raw.n_inner !== null && raw.n_inner !== 4 * n_embd) fail(`n_inner ${JSON.stringify(raw.n_inner)} is not supported (only 4 * n_embd)`);
  if (raw.scale_attn_weights === false) fail('scale_attn_weights false is not supported');
  if (raw.scale_attn_by_inverse_layer_idx === true) fail('scale_attn_by_inverse_layer_idx true is not supported');
  if (raw.add_cross_attention === true) fail('add_cross_attention true is not supported');
  return { vocab_size, n_positions, n_embd, n_layer, n_head, layer_norm_epsilon: eps as number };
}

// ---- weights ----

const PICKLE_EXT = ['.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle'];

function findWeights(dir: string): string {
  const file = path.join(dir, 'model.safetensors');
  if (fs.existsSync(file)) return file;
  const names = fs.readdirSync(dir);
  const pickles = names.filter((n) => PICKLE_EXT.includes(path.extname(n).toLowerCase()));
  if (pickles.length > 0) {
    throw new ModelFormatError(
      file,
      `not found; the folder has ${pickles.join(', ')}, a pickle file, which is never loaded (unpickling can run arbitrary code). ` +
        'Convert it once, where you trust the file, to model.safetensors: in Python, ' +
        '`AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)` with transformers, ' +
        'or use the safetensors "convert" tool on the Hugging Face Hub',
    );
  }
  if (names.includes('model.safetensors.index.json')) {
    throw new ModelFormatError(file, 'not found; sharded safetensors (model.safetensors.index.json) are not supported, save the model as one model.safetensors');
  }
  throw new ModelFormatError(file, 'file not found');
}

/** Buffers some GPT-2 files carry (the causal mask and its fill value): recomputed, never read. */
const IGNORED = /^h\.\d+\.attn\.(bias|masked_bias)$/;

function stripPrefix(name: string): string {
  return name.startsWith('transformer.') ? name.slice('transformer.'.length) : name;
}

/** The tensors a GPT-2 of this config must have, with their shapes (Conv1D layout: [in, out]). */
export function expectedShapes(c: Gpt2Config): Map<string, number[]> {
  const E = c.n_embd;
  const m = new Map<string, number[]>([
    ['wte.weight', [c.vocab_size, E]],
    ['wpe.weight', [c.n_positions, E]],
  ]);
  for (let i = 0; i < c.n_layer; i++) {
    const h = `h.${i}.`;
    m.set(h + 'ln_1.weight', [E]);
    m.set(h + 'ln_1.bias', [E]);
    m.set(h + 'attn.c_attn.weight', [E, 3 * E]);
    m.set(h + 'attn.c_attn.bias', [3 * E]);
    m.set(h + 'attn.c_proj.weight', [E, E]);
    m.set(h + 'attn.c_proj.bias', [E]);
    m.set(h + 'ln_2.weight', [E]);
    m.set(h + 'ln_2.bias', [E]);
    m.set(h + 'mlp.c_fc.weight', [E, 4 * E]);
    m.set(h + 'mlp.c_fc.bias', [4 * E]);
    m.set(h + 'mlp.c_proj.weight', [4 * E, E]);
    m.set(h + 'mlp.c_proj.bias', [E]);
  }
  m.set('ln_f.weight', [E]);
  m.set('ln_f.bias', [E]);
  return m;
}

function loadWeights(file: string, config: Gpt2Config): Gpt2Weights {
  const fail = (problem: string): never => {
    throw new ModelFormatError(file, problem);
  };
  const tensors = readSafetensors(file, { include: (n) => !IGNORED.test(stripPrefix(n)) });
  const byName = new Map<string, FloatTensor>();
  for (const [name, t] of tensors) {
    const short = stripPrefix(name);
    if (byName.has(short)) fail(`tensor ${short} is present both with and without the "transformer." prefix`);
    byName.set(short, t);
  }
  const expected = expectedShapes(config);
  expected.set('lm_head.weight', [config.vocab_size, config.n_embd]);
  const extra = [...byName.keys()].filter((n) => !expected.has(n));
  if (extra.length > 0) {
    const shown = extra.slice(0, 5).join(', ') + (extra.length > 5 ? `, ... (${extra.length} in all)` : '');
    fail(`unexpected tensor${extra.length > 1 ? 's' : ''} ${shown} for a GPT-2 with n_layer ${config.n_layer}`);
  }
  for (const [name, shape] of expected) {
    const t = byName.get(name);
    if (!t) {
      if (name === 'lm_head.weight') continue;
      fail(`tensor ${name} is missing`);
    }
    if (t!.shape.length !== shape.length || t!.shape.some((d, i) => d !== shape[i])) {
      fail(`tensor ${name} has shape [${t!.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
  }
  const get = (n: string): Float32Array => byName.get(n)!.data;
  const blocks: Gpt2BlockWeights[] = [];
  for (let i = 0; i < config.n_layer; i++) {
    const h = `h.${i}.`;
    blocks.push({
      ln1g: get(h + 'ln_1.weight'),
      ln1b: get(h + 'ln_1.bias'),
      attnW: get(h + 'attn.c_attn.weight'),
      attnB: get(h + 'attn.c_attn.bias'),
      projW: get(h + 'attn.c_proj.weight'),
      projB: get(h + 'attn.c_proj.bias'),
      ln2g: get(h + 'ln_2.weight'),
      ln2b: get(h + 'ln_2.bias'),
      fcW: get(h + 'mlp.c_fc.weight'),
      fcB: get(h + 'mlp.c_fc.bias'),
      fcProjW: get(h + 'mlp.c_proj.weight'),
      fcProjB: get(h + 'mlp.c_proj.bias'),
    });
  }
  return {
    wte: get('wte.weight'),
    wpe: get('wpe.weight'),
    lnFg: get('ln_f.weight'),
    lnFb: get('ln_f.bias'),
    lmHead: byName.get('lm_head.weight')?.data ?? null,
    blocks,
  };
}

// ---- generation_config.json ----

/**
 * EOS and pad ids and the generation parameters a folder sets. EOS comes from
 * generation_config.json, else config.json, else 50256 (GPT-2's <|endoftext|>) when the vocabulary
 * has it, else the last id; pad from pad_token_id, else the first EOS, as Hugging Face does.
 * Keys that are not generation parameters of ours (max_length, transformers_version, ...) are ignored.
 */
export function parseGenerationDefaults(
  gen: Record<string, unknown>,
  config: Record<string, unknown>,
  vocabSize: number,
  file = 'generation_config.json',
): GenerationDefaults {
  const fail = (problem: string): never => {
    throw new ModelFormatError(file, problem);
  };
  const tokenIds = (key: string, value: unknown, where: string): number[] | null => {
    if (value === undefined || value === null) return null;
    const list = Array.isArray(value) ? value : [value];
    if (list.length === 0 || !list.every((x) => Number.isSafeInteger(x) && x >= 0 && x < vocabSize)) {
      throw new ModelFormatError(where, `"${key}" must be a token id or a non-empty list of token ids below vocab_size ${vocabSize}, got ${JSON.stringify(value)}`);
    }
    return list as number[];
  };
  const configFile = path.join(path.dirname(file), 'config.json');
  const eos =
    tokenIds('eos_token_id', gen.eos_token_id, file) ??
    tokenIds('eos_token_id', config.eos_token_id, configFile) ?? [vocabSize >= 50257 ? 50256 : vocabSize - 1];
  const pad = gen.pad_token_id !== undefined && gen.pad_token_id !== null ? tokenIds('pad_token_id', gen.pad_token_id, file) : tokenIds('pad_token_id', config.pad_token_id, configFile);
  if (pad && pad.length !== 1) fail(`"pad_token_id" must be one token id, got ${JSON.stringify(gen.pad_token_id ?? config.pad_token_id)}`);

  const params: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(GenerationParams.shape)) {
    const value = gen[key];
    if (value === undefined || value === null) continue;
    const r = schema.safeParse(value);
    if (!r.success) fail(`"${key}": ${JSON.stringify(value)} is not a valid value (${r.error.issues[0]?.message ?? 'invalid'})`);
    params[key] = r.data;
  }
  return { ...(params as GenerationParams), eos_token_id: [...new Set(eos)], pad_token_id: pad ? pad[0] : eos[0] };
}
