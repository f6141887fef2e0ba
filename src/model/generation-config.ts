import * as path from 'node:path';
import { ModelFormatError } from '../shared/errors.js';
import { GenerationParams, type GenerationDefaults } from '../shared/params.js';

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
      throw new ModelFormatError(
        where,
        `"${key}" must be a token id or a non-empty list of token ids below vocab_size ${vocabSize}, got ${JSON.stringify(value)}`,
      );
    }
    return list as number[];
  };
  const configFile = path.join(path.dirname(file), 'config.json');
  const eos = tokenIds('eos_token_id', gen.eos_token_id, file) ??
    tokenIds('eos_token_id', config.eos_token_id, configFile) ?? [vocabSize >= 50257 ? 50256 : vocabSize - 1];
  const pad =
    gen.pad_token_id !== undefined && gen.pad_token_id !== null
      ? tokenIds('pad_token_id', gen.pad_token_id, file)
      : tokenIds('pad_token_id', config.pad_token_id, configFile);
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
