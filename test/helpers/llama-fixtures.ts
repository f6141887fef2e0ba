/** Small random Llama-family folders for the compiler tests, and their float64 reference models. */
import * as path from 'node:path';
import { loadModel, makeModel, type LoadedModel } from '../../src/compiler/index.js';
import type { MakeModelOptions } from '../../src/compiler/make-model.js';
import { readSafetensors, writeSafetensors } from '../../src/compiler/safetensors.js';
import type { LlamaFolder } from '../../src/compiler/types.js';
import { normals, tempDir } from './compiler-fixtures.js';
import type { LlamaRefModel } from './reference-llama.js';

export type LlamaModel = LoadedModel<LlamaFolder>;

/**
 * Writes and loads a small Llama-family folder. `headStd` replaces an untied lm_head with wider
 * weights, for peaked next-token distributions (clear argmax, few near ties).
 */
export async function llamaModel(name: string, opts: Omit<MakeModelOptions, 'out'>, headStd?: number): Promise<LlamaModel> {
  const dir = path.join(tempDir(), name);
  await makeModel({ layers: 2, embd: 64, positions: 128, ...opts, out: dir });
  if (headStd !== undefined) {
    const file = path.join(dir, 'model.safetensors');
    const tensors = Object.fromEntries(readSafetensors(file));
    const head = tensors['lm_head.weight'];
    if (!head) throw new Error('headStd needs an untied model');
    tensors['lm_head.weight'] = { ...head, data: normals(head.data.length, 99, headStd) };
    writeSafetensors(file, tensors);
  }
  return (await loadModel(dir, name)).as('llama');
}

export function llamaRefOf(m: LlamaModel): LlamaRefModel {
  return { config: m.folder.config, weights: m.folder.weights };
}
