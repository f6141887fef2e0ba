import { z } from 'zod';
import { BatchgenError } from './errors.js';
import { LIMITS } from './limits.js';

/** The most stop ids a request may add (beam variants fetch enough candidates for this many). */
export const MAX_STOP_TOKEN_IDS = LIMITS.maxStopTokenIds;

/** The most stop strings a request may give (OpenAI's limit), and the longest one. */
export const MAX_STOP_STRINGS = LIMITS.maxStopStrings;
export const MAX_STOP_STRING_CHARS = LIMITS.maxStopStringChars;

const atMost = (n: number, name: string) => `at most ${n} (the ${name} limit)`;

/** Every generation parameter, with Hugging Face's names and the bounds a request may use. */
export const GenerationParamFields = z.object({
  max_new_tokens: z.number().int().min(1).max(LIMITS.maxNewTokens, atMost(LIMITS.maxNewTokens, 'maxNewTokens')),
  do_sample: z.boolean(),
  temperature: z.number().gt(0).max(100),
  top_k: z.number().int().min(0),
  top_p: z.number().gt(0).max(1),
  repetition_penalty: z.number().gt(0).max(100),
  seed: z.number().int().min(0).max(0xffffffff),
  num_beams: z.number().int().min(1).max(16),
  length_penalty: z.number().min(-100).max(100),
  early_stopping: z.union([z.boolean(), z.literal('never')]),
  /** Extra token ids that end a row, besides the model's EOS. */
  stop_token_ids: z.array(z.number().int().min(0)).max(MAX_STOP_TOKEN_IDS, `${atMost(MAX_STOP_TOKEN_IDS, 'maxStopTokenIds')} ids`),
  /** Texts that end a row (checked on the decoded text, across token boundaries); the text ends before it. */
  stop_strings: z
    .array(
      z
        .string()
        .min(1)
        .max(MAX_STOP_STRING_CHARS, `${atMost(MAX_STOP_STRING_CHARS, 'maxStopStringChars')} characters`),
    )
    .max(MAX_STOP_STRINGS, `${atMost(MAX_STOP_STRINGS, 'maxStopStrings')} stop strings`),
  /** EOS and stop ids cannot be chosen before this many new tokens. */
  min_new_tokens: z.number().int().min(0).max(LIMITS.maxNewTokens, atMost(LIMITS.maxNewTokens, 'maxNewTokens')),
  /** An n-gram of this size never occurs twice in prompt + generated (0: off). */
  no_repeat_ngram_size: z.number().int().min(0).max(LIMITS.maxNewTokens, atMost(LIMITS.maxNewTokens, 'maxNewTokens')),
});
/**
 * A request's generation parameters. Everything is optional: what a request leaves out comes from
 * the model folder's generation_config.json, then from Hugging Face's defaults.
 */
export const GenerationParams = GenerationParamFields.partial().strict();
export type GenerationParams = z.infer<typeof GenerationParams>;

/** Defaults a model folder may set (generation_config.json), plus its EOS and pad ids. */
export interface GenerationDefaults extends GenerationParams {
  eos_token_id: number[];
  pad_token_id: number;
}

/** Hugging Face's GenerationConfig defaults, except max_new_tokens (16, as OpenAI's max_tokens). */
export const HF_DEFAULTS = {
  max_new_tokens: 16,
  do_sample: false,
  temperature: 1.0,
  top_k: 50,
  top_p: 1.0,
  repetition_penalty: 1.0,
  num_beams: 1,
  length_penalty: 1.0,
  early_stopping: false as boolean | 'never',
  min_new_tokens: 0,
  no_repeat_ngram_size: 0,
};

/** Every parameter decided: what one row of a batch runs with. */
export interface ResolvedParams {
  max_new_tokens: number;
  do_sample: boolean;
  temperature: number;
  top_k: number;
  top_p: number;
  repetition_penalty: number;
  /** Always set: a request without a seed gets a random one, recorded with its result. */
  seed: number;
  num_beams: number;
  length_penalty: number;
  early_stopping: boolean | 'never';
  /** EOS ids of the model plus the request's stop ids. */
  stop_ids: number[];
  pad_token_id: number;
  /** Stop texts, checked on the host (absent: none). */
  stop_strings?: string[];
  /** absent: 0 */
  min_new_tokens?: number;
  /** absent: 0 (off) */
  no_repeat_ngram_size?: number;
}

/** `greedy`, `sample` or `beam{k}`: the part of the program that the parameters choose. */
export type Strategy = 'greedy' | 'sample' | `beam${number}`;

export function resolveParams(req: GenerationParams, defaults: GenerationDefaults, randomSeed: () => number = randomU32): ResolvedParams {
  const pick = <K extends keyof typeof HF_DEFAULTS>(k: K): (typeof HF_DEFAULTS)[K] =>
    (req[k] ?? defaults[k] ?? HF_DEFAULTS[k]) as (typeof HF_DEFAULTS)[K];
  const r: ResolvedParams = {
    max_new_tokens: pick('max_new_tokens'),
    do_sample: pick('do_sample'),
    temperature: pick('temperature'),
    top_k: pick('top_k'),
    top_p: pick('top_p'),
    repetition_penalty: pick('repetition_penalty'),
    seed: req.seed ?? defaults.seed ?? randomSeed(),
    num_beams: pick('num_beams'),
    length_penalty: pick('length_penalty'),
    early_stopping: pick('early_stopping'),
    stop_ids: [...new Set([...defaults.eos_token_id, ...(req.stop_token_ids ?? [])])],
    pad_token_id: defaults.pad_token_id,
    stop_strings: [...new Set(req.stop_strings ?? defaults.stop_strings ?? [])],
    min_new_tokens: pick('min_new_tokens'),
    no_repeat_ngram_size: pick('no_repeat_ngram_size'),
  };
  if (r.num_beams > 1 && r.do_sample) {
    throw new BatchgenError('unsupported_parameter', 'do_sample with num_beams > 1 (beam sampling) is not supported');
  }
  if (r.num_beams > 1 && r.stop_strings!.length > 0) {
    throw new BatchgenError('unsupported_parameter', 'stop strings with num_beams > 1 (beam search) are not supported; use stop_token_ids');
  }
  return r;
}

export function strategyOf(p: Pick<ResolvedParams, 'do_sample' | 'num_beams'>): Strategy {
  if (p.num_beams > 1) return `beam${p.num_beams}`;
  return p.do_sample ? 'sample' : 'greedy';
}

export function beamsOf(s: Strategy): number {
  return s.startsWith('beam') ? Number(s.slice(4)) : 1;
}

function randomU32(): number {
  return Math.floor(Math.random() * 0x100000000);
}
