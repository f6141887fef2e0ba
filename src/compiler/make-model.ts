/**
 * Writes a model folder with seeded random weights, in Hugging Face's layout, so that tests,
 * benchmarks and the demo run without downloading anything: GPT-2, or a Llama-family folder
 * (llama, qwen2, mistral). The tokenizer is always GPT-2's real BPE (with the family's special
 * tokens added after it), so that every folder runs the real tokenizer.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gpt2TokenizerJson } from '../model/tokenizer.js';
import { parseModelConfig } from '../model/config.js';
import type { Llama3RopeScaling } from '../model/llama-config.js';
import { INDEX_FILE } from './checkpoint.js';
import { expectedShapes } from './gpt2-weights.js';
import { llamaShapes } from './llama-weights.js';
import {
  ARCHS,
  type Arch,
  type ArchShape,
  FIRST_SPECIAL_ID,
  SPECIAL_TOKENS,
  type ChatTemplateName,
  generationConfig,
  hasSpecialTokens,
  hfConfig,
  tokenizerConfig,
  tokenizerJson,
} from './model-files.js';
import { randomTensor } from './random-weights.js';
import { type FloatDtype, type TensorSpec, writeSafetensorsLazy } from './safetensors.js';

export type { Arch } from './model-files.js';

/** Llama 3.2's rope_scaling: what `ropeScaling: 'llama3'` writes. */
export const LLAMA32_ROPE_SCALING: Llama3RopeScaling = {
  rope_type: 'llama3',
  factor: 32,
  low_freq_factor: 1,
  high_freq_factor: 4,
  original_max_position_embeddings: 8192,
};

export interface MakeModelOptions {
  /** Folder to write (created if needed; files in it are overwritten). */
  out: string;
  /** Default gpt2. */
  arch?: Arch;
  /** Default 2. */
  layers?: number;
  /** Default 2. */
  heads?: number;
  /** Key/value heads (Llama family). Default heads / 2 when heads is even, else heads. */
  kvHeads?: number;
  /** Hidden size. Default 64; must be divisible by heads. */
  embd?: number;
  /** MLP width (Llama family; GPT-2's is 4 × embd). Default 8/3 × embd rounded up to a multiple of 8. */
  intermediate?: number;
  /** Context length (n_positions / max_position_embeddings). Default 128. */
  positions?: number;
  /** Default 1: the same seed and shape give the same bytes. */
  seed?: number;
  /** Default F32. */
  dtype?: FloatDtype;
  /**
   * Default 50257 for GPT-2 (its tokenizer's), 50264 for the Llama family (with its special tokens).
   * A smaller one (the shape of a real model, for benchmarks) gets no special tokens, EOS = its last
   * id, and a tokenizer that can produce ids beyond it: feed such a model token ids, not text.
   */
  vocab?: number;
  /** Llama family: lm_head tied to the embedding. Default true for qwen2, false for llama and mistral. */
  tied?: boolean;
  /** Llama only: rope_scaling of type llama3 ('llama3': Llama 3.2's values). Default none. */
  ropeScaling?: Llama3RopeScaling | 'llama3' | null;
  /** Mistral only: sliding_window. Default null (none). */
  slidingWindow?: number | null;
  /** Split the weights into this many safetensors shards with an index. Default 1 (one model.safetensors). */
  shards?: number;
  /** Llama family: a chat template in tokenizer_config.json (ChatML as Qwen2.5's, or Llama 3's). Default none. */
  chatTemplate?: ChatTemplateName | null;
}

export async function makeModel(opts: MakeModelOptions): Promise<void> {
  const o = resolveOptions(opts);
  const a = archShape(o);
  fs.mkdirSync(o.out, { recursive: true });
  const hf = hfConfig(a);
  // The folder must load: a config our own parser refuses is a bug here, not in the caller.
  const parsed = parseModelConfig(hf, path.join(o.out, 'config.json'));
  writeJson(path.join(o.out, 'config.json'), hf);
  writeJson(path.join(o.out, 'generation_config.json'), generationConfig(a));
  fs.writeFileSync(path.join(o.out, 'tokenizer.json'), tokenizerJson(a, gpt2TokenizerJson()));
  if (a.arch !== 'gpt2') writeJson(path.join(o.out, 'tokenizer_config.json'), tokenizerConfig(a, a.chatTemplate));

  const shapes = parsed.family === 'gpt2' ? expectedShapes(parsed.config) : llamaShapes(parsed.config);
  if (parsed.family === 'llama' && parsed.config.tie_word_embeddings) shapes.delete('lm_head.weight');
  const specs: TensorSpec[] = [...shapes].map(([name, shape]) => ({ name, dtype: o.dtype, shape }));
  const scratch = new Float32Array(Math.max(...specs.map((s) => s.shape.reduce((x, y) => x * y, 1))));
  const produce = (name: string) => randomTensor(shapes.get(name)!, name, o.seed, scratch);
  for (const f of fs.readdirSync(o.out)) if (/^model.*\.safetensors(\.index\.json)?$/.test(f)) fs.rmSync(path.join(o.out, f));
  if (o.shards === 1) {
    writeSafetensorsLazy(path.join(o.out, 'model.safetensors'), specs, produce, { format: 'pt' });
    return;
  }
  // Shards as save_pretrained names them, each holding a contiguous run of tensors.
  const pad = (n: number) => String(n).padStart(5, '0');
  const weightMap: Record<string, string> = {};
  const per = Math.ceil(specs.length / o.shards);
  for (let i = 0; i < o.shards; i++) {
    const part = specs.slice(i * per, (i + 1) * per);
    const file = `model-${pad(i + 1)}-of-${pad(o.shards)}.safetensors`;
    for (const s of part) weightMap[s.name] = file;
    writeSafetensorsLazy(path.join(o.out, file), part, produce, { format: 'pt' });
  }
  const bytesPer = o.dtype === 'F32' ? 4 : 2;
  const totalSize = specs.reduce((n, s) => n + s.shape.reduce((x, y) => x * y, 1) * bytesPer, 0);
  writeJson(path.join(o.out, INDEX_FILE), { metadata: { total_size: totalSize }, weight_map: weightMap });
}

type Resolved = Required<Omit<MakeModelOptions, 'ropeScaling' | 'slidingWindow' | 'chatTemplate'>> & {
  ropeScaling: Llama3RopeScaling | null;
  slidingWindow: number | null;
  chatTemplate: ChatTemplateName | null;
};

/** The options with their defaults; a RangeError for options that do not fit together. */
export function resolveOptions(opts: MakeModelOptions): Resolved {
  const arch = opts.arch ?? 'gpt2';
  if (!ARCHS.includes(arch)) throw new RangeError(`arch must be one of ${ARCHS.join(', ')}, got ${arch}`);
  const heads = opts.heads ?? 2;
  const embd = opts.embd ?? 64;
  const o: Resolved = {
    out: opts.out,
    arch,
    layers: opts.layers ?? 2,
    heads,
    kvHeads: opts.kvHeads ?? (arch === 'gpt2' ? heads : heads % 2 === 0 ? heads / 2 : heads),
    embd,
    intermediate: opts.intermediate ?? (arch === 'gpt2' ? 4 * embd : Math.ceil((8 * embd) / 3 / 8) * 8),
    positions: opts.positions ?? 128,
    seed: opts.seed ?? 1,
    dtype: opts.dtype ?? 'F32',
    vocab: opts.vocab ?? (arch === 'gpt2' ? 50257 : FIRST_SPECIAL_ID + SPECIAL_TOKENS.length),
    tied: opts.tied ?? arch === 'qwen2',
    ropeScaling: opts.ropeScaling === 'llama3' ? LLAMA32_ROPE_SCALING : (opts.ropeScaling ?? null),
    slidingWindow: opts.slidingWindow ?? null,
    shards: opts.shards ?? 1,
    chatTemplate: opts.chatTemplate ?? null,
  };
  for (const k of ['layers', 'heads', 'kvHeads', 'embd', 'intermediate', 'positions', 'vocab', 'shards'] as const) {
    if (!Number.isSafeInteger(o[k]) || o[k] <= 0) throw new RangeError(`${k} must be a positive integer, got ${o[k]}`);
  }
  if (!Number.isSafeInteger(o.seed) || o.seed < 0 || o.seed > 0xffffffff)
    throw new RangeError(`seed must be an integer in [0, 2^32), got ${o.seed}`);
  if (o.embd % o.heads !== 0) throw new RangeError(`embd ${o.embd} must be divisible by heads ${o.heads}`);
  if (!['F32', 'F16', 'BF16'].includes(o.dtype)) throw new RangeError(`dtype must be F32, F16 or BF16, got ${o.dtype}`);
  if (!o.out) throw new RangeError('out is required');
  if (arch === 'gpt2') {
    if (opts.kvHeads !== undefined && opts.kvHeads !== heads) throw new RangeError('kvHeads is for the Llama family (GPT-2 has none)');
    if (opts.intermediate !== undefined && opts.intermediate !== 4 * embd)
      throw new RangeError("intermediate is for the Llama family (GPT-2's is 4 × embd)");
    if (opts.tied === false) throw new RangeError('GPT-2 folders are written tied (no lm_head.weight)');
  } else {
    if (o.heads % o.kvHeads !== 0) throw new RangeError(`heads ${o.heads} must be a multiple of kvHeads ${o.kvHeads}`);
    if ((o.embd / o.heads) % 2 !== 0) throw new RangeError(`embd / heads (${o.embd / o.heads}) must be even for rotary embeddings`);
  }
  if (o.ropeScaling && arch !== 'llama') throw new RangeError('ropeScaling is for arch llama');
  if (o.slidingWindow !== null && arch !== 'mistral') throw new RangeError('slidingWindow is for arch mistral');
  if (o.chatTemplate !== null) {
    if (!['chatml', 'llama3'].includes(o.chatTemplate))
      throw new RangeError(`chatTemplate must be chatml or llama3, got ${o.chatTemplate}`);
    if (!hasSpecialTokens(archShape(o)))
      throw new RangeError(
        `a chat template needs a Llama-family folder with vocab ≥ ${FIRST_SPECIAL_ID + SPECIAL_TOKENS.length} (its special tokens)`,
      );
  }
  return o;
}

function archShape(o: Resolved): ArchShape {
  return { ...o };
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}
