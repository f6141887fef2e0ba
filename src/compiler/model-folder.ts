/**
 * Reads a model folder in Hugging Face's layout: config.json (its model_type picks the family),
 * model.safetensors or a sharded checkpoint, tokenizer.json and an optional generation_config.json.
 * Everything is checked, with an error that names the file and the culprit.
 */
import { readModelMeta } from '../model/info.js';
import { readCheckpoint } from './checkpoint.js';
import { gpt2Include, gpt2Weights } from './gpt2-weights.js';
import { llamaInclude, llamaWeights } from './llama-weights.js';
import type { ModelFolder } from './types.js';

export { expectedShapes } from './gpt2-weights.js';

export async function readModelFolder(
  dir: string,
  beforeWeights?: (meta: Awaited<ReturnType<typeof readModelMeta>>) => void,
): Promise<ModelFolder> {
  const meta = await readModelMeta(dir);
  beforeWeights?.(meta);
  if (meta.family === 'gpt2') return { ...meta, weights: gpt2Weights(readCheckpoint(dir, gpt2Include), meta.config) };
  return { ...meta, weights: llamaWeights(readCheckpoint(dir, llamaInclude), meta.config) };
}
