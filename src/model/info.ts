/**
 * What a model folder says without its weights: config.json, generation_config.json and
 * tokenizer.json, read and checked. Producers need only this (tokenize, context, defaults); the
 * compiler reads the weights on top of it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelFormatError } from '../shared/errors.js';
import type { ModelSpec } from '../shared/models.js';
import type { GenerationDefaults } from '../shared/params.js';
import { type ModelArch, type ModelConfig, parseModelConfig } from './config.js';
import { type ChatTemplate, loadChatTemplate } from './chat-template.js';
import { parseGenerationDefaults } from './generation-config.js';
import { readJsonObject } from './json-file.js';
import { loadTokenizer, type TextTokenizer } from './tokenizer.js';

interface MetaFiles {
  dir: string;
  /** From generation_config.json when present (eos and pad ids always filled). */
  defaults: GenerationDefaults;
  tokenizer: TextTokenizer;
  /** chat_template.jinja, else tokenizer_config.json's chat_template; null: chat lines are refused */
  chat: ChatTemplate | null;
}

/** A model folder's metadata: everything but the weights (`family`, `config`, `arch` from config.json). */
export type ModelMeta = MetaFiles & ModelConfig;

/** Checks that `dir` is a folder, then reads config.json, generation_config.json and tokenizer.json. */
export async function readModelMeta(dir: string): Promise<ModelMeta> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw new ModelFormatError(dir, 'model folder not found');
  }
  if (!stat.isDirectory())
    throw new ModelFormatError(dir, 'not a folder (a model is a folder with config.json, model.safetensors and tokenizer.json)');
  const configFile = path.join(dir, 'config.json');
  const raw = readJsonObject(configFile, true)!;
  const parsed = parseModelConfig(raw, configFile);
  const genFile = path.join(dir, 'generation_config.json');
  const defaults = parseGenerationDefaults(readJsonObject(genFile, false) ?? {}, raw, parsed.arch.vocabSize, genFile);
  const tokenizer = await loadTokenizer(path.join(dir, 'tokenizer.json'));
  return { dir, ...parsed, defaults, tokenizer, chat: loadChatTemplate(dir) };
}

/** What a producer needs of a model: no weights. */
export interface ModelInfo {
  name: string;
  dir: string;
  contextLength: number;
  vocabSize: number;
  arch: ModelArch;
  defaults: GenerationDefaults;
  tokenizer: TextTokenizer;
  chat: ChatTemplate | null;
}

export async function loadModelInfo(spec: ModelSpec): Promise<ModelInfo> {
  const m = await readModelMeta(spec.dir);
  return {
    name: spec.name,
    dir: spec.dir,
    contextLength: m.arch.contextLength,
    vocabSize: m.arch.vocabSize,
    arch: m.arch,
    defaults: m.defaults,
    tokenizer: m.tokenizer,
    chat: m.chat,
  };
}
