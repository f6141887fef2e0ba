/**
 * Model lists (`NAME=DIR`), from flags or BATCHGEN_MODELS, and the light view of a model folder that
 * producers need: tokenizer, context length, vocabulary size and generation defaults, without weights.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseConfig, parseGenerationDefaults } from '../compiler/model-folder.js';
import { loadTokenizer } from '../compiler/tokenizer.js';
import type { TextTokenizer } from '../compiler/types.js';
import { BatchgenError, ModelFormatError } from './errors.js';
import { checkModelName } from './keys.js';
import type { GenerationDefaults } from './params.js';

export interface ModelSpec {
  name: string;
  dir: string;
}

/**
 * Parses `NAME=DIR` entries (flags first, then BATCHGEN_MODELS as `name=dir,name=dir`). A bare DIR
 * takes the folder's base name as its name. A name given twice is an error.
 */
export function parseModelSpecs(flags: string[], env: string | undefined = process.env.BATCHGEN_MODELS): ModelSpec[] {
  const entries = [...flags];
  if (entries.length === 0 && env) entries.push(...env.split(',').map((s) => s.trim()).filter(Boolean));
  const out: ModelSpec[] = [];
  for (const e of entries) {
    const i = e.indexOf('=');
    const name = i > 0 ? e.slice(0, i) : path.basename(path.resolve(e));
    const dir = i > 0 ? e.slice(i + 1) : e;
    if (!dir) throw new BatchgenError('invalid_request', `model "${e}": expected NAME=DIR`);
    checkModelName(name);
    if (out.some((m) => m.name === name)) throw new BatchgenError('invalid_request', `model name "${name}" given twice`);
    out.push({ name, dir: path.resolve(dir) });
  }
  return out;
}

/** What a producer needs of a model: no weights. */
export interface ModelInfo {
  name: string;
  dir: string;
  contextLength: number;
  vocabSize: number;
  defaults: GenerationDefaults;
  tokenizer: TextTokenizer;
}

function readJson(file: string, required: boolean): Record<string, unknown> | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf-8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !required) return null;
    throw new ModelFormatError(file, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `cannot read (${(e as Error).message})`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ModelFormatError(file, `not valid JSON (${(e as Error).message})`);
  }
}

/** Reads config.json, generation_config.json and tokenizer.json of a folder (never the weights). */
export async function loadModelInfo(spec: ModelSpec): Promise<ModelInfo> {
  if (!fs.existsSync(spec.dir) || !fs.statSync(spec.dir).isDirectory()) throw new ModelFormatError(spec.dir, 'model folder not found');
  const configFile = path.join(spec.dir, 'config.json');
  const raw = readJson(configFile, true)!;
  const config = parseConfig(raw, configFile);
  const genFile = path.join(spec.dir, 'generation_config.json');
  const defaults = parseGenerationDefaults(readJson(genFile, false) ?? {}, raw, config.vocab_size, genFile);
  const tokenizer = await loadTokenizer(path.join(spec.dir, 'tokenizer.json'));
  return { name: spec.name, dir: spec.dir, contextLength: config.n_positions, vocabSize: config.vocab_size, defaults, tokenizer };
}
