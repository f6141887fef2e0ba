/**
 * What the OpenAI endpoints share: the refusal of a parameter the engine cannot honour, and the
 * sampling parameters of an OpenAI body with OpenAI's meaning (temperature 1 by default and 0 for
 * greedy; no top-k, repetition penalty, beams or bans, whatever generation_config.json says).
 */
import { BatchgenError } from './errors.js';
import type { GenerationParams } from './params.js';

/** Throws `unsupported_parameter` for a parameter at a value the engine cannot honour. */
export function unsupported(name: string, value: unknown, why: string): never {
  throw new BatchgenError('unsupported_parameter', `${name}=${JSON.stringify(value)}: ${why}`);
}

/** The OpenAI parameters that become generation parameters. */
export interface OpenAISampling {
  temperature?: number | null;
  top_p?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

/**
 * Generation parameters of an OpenAI body: `temperature` (default 1) 0 means greedy, above 0
 * sampling at it; `top_p` (default 1) and `seed` as they are; `stop` (a string or up to 4) becomes
 * stop strings; top_k 0 (off), repetition_penalty 1, num_beams 1, no min_new_tokens, no n-gram ban.
 * `maxNewTokens` undefined leaves max_new_tokens to the caller.
 */
export function openAIParams(body: OpenAISampling, maxNewTokens: number | undefined): GenerationParams {
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  const params: GenerationParams = {
    ...(maxNewTokens === undefined ? {} : { max_new_tokens: maxNewTokens }),
    top_k: 0,
    top_p: body.top_p ?? 1,
    repetition_penalty: 1,
    num_beams: 1,
    min_new_tokens: 0,
    no_repeat_ngram_size: 0,
    stop_strings: stop,
  };
  const temperature = body.temperature ?? 1;
  if (temperature === 0) {
    params.do_sample = false;
  } else {
    params.do_sample = true;
    params.temperature = temperature;
  }
  if (body.seed != null) params.seed = body.seed;
  return params;
}

/** presence_penalty and frequency_penalty: accepted only at 0 (the native form's repetition_penalty is another penalty). */
export function refusePenalties(body: { presence_penalty?: number | null; frequency_penalty?: number | null }): void {
  for (const name of ['presence_penalty', 'frequency_penalty'] as const) {
    const v = body[name];
    if (v != null && v !== 0) unsupported(name, v, 'not supported (the native form has repetition_penalty, which is a different penalty)');
  }
}
