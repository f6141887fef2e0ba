/** The generation flags shared by CLI commands, mapped to Hugging Face parameter names. */
import { numberFlag } from './common.js';
import type { ParseArgsConfig } from 'node:util';
import { BatchgenError } from '../shared/errors.js';
import { GenerationParams } from '../shared/params.js';

export const GEN_FLAG_OPTIONS = {
  'max-new-tokens': { type: 'string' },
  'do-sample': { type: 'boolean' },
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'num-beams': { type: 'string' },
  'length-penalty': { type: 'string' },
  'early-stopping': { type: 'string' },
  'repetition-penalty': { type: 'string' },
  seed: { type: 'string' },
  'min-new-tokens': { type: 'string' },
  'no-repeat-ngram-size': { type: 'string' },
  stop: { type: 'string', multiple: true },
} as const satisfies ParseArgsConfig['options'];

type Values = Partial<Record<keyof typeof GEN_FLAG_OPTIONS, string | boolean | string[]>>;

const num = (flag: string, v: string | boolean | string[] | undefined): number | undefined =>
  numberFlag(flag, v === undefined ? undefined : String(v));

/** Flags → validated GenerationParams (the same zod schema as request lines). */
export function paramsFromFlags(v: Values): GenerationParams {
  const es = v['early-stopping'];
  let early: boolean | 'never' | undefined;
  if (es !== undefined) {
    if (es === 'true' || es === 'false' || es === 'never') early = es === 'never' ? 'never' : es === 'true';
    else throw new BatchgenError('invalid_request', `--early-stopping ${String(es)}: expected true, false or never`);
  }
  const raw = {
    max_new_tokens: num('max-new-tokens', v['max-new-tokens']),
    do_sample: v['do-sample'] === true ? true : undefined,
    temperature: num('temperature', v.temperature),
    top_k: num('top-k', v['top-k']),
    top_p: num('top-p', v['top-p']),
    num_beams: num('num-beams', v['num-beams']),
    length_penalty: num('length-penalty', v['length-penalty']),
    early_stopping: early,
    repetition_penalty: num('repetition-penalty', v['repetition-penalty']),
    seed: num('seed', v.seed),
    min_new_tokens: num('min-new-tokens', v['min-new-tokens']),
    no_repeat_ngram_size: num('no-repeat-ngram-size', v['no-repeat-ngram-size']),
    stop_strings: Array.isArray(v.stop) ? v.stop : undefined,
  };
  const clean = Object.fromEntries(Object.entries(raw).filter(([, x]) => x !== undefined));
  const parsed = GenerationParams.safeParse(clean);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const flag = issue.path[0] === 'stop_strings' ? 'stop' : String(issue.path[0]).replace(/_/g, '-');
    throw new BatchgenError('invalid_request', `--${flag}: ${issue.message}`);
  }
  return parsed.data;
}
