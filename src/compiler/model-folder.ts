/**
 * Reads a GPT-2 model folder in Hugging Face's layout: config.json, model.safetensors,
 * tokenizer.json and an optional generation_config.json. Everything is checked, with an error that
 * names the file and the culprit. Weights are only ever read from safetensors: pickles
 * (pytorch_model.bin, *.pt, ...) can run code when loaded, so they are refused, never opened.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Gpt2Config } from '../model/config.js';
import { readModelMeta } from '../model/info.js';
import { ModelFormatError } from '../shared/errors.js';
import { readSafetensors, type FloatTensor } from './safetensors.js';
import type { Gpt2BlockWeights, Gpt2Weights, ModelFolder } from './types.js';

export async function readModelFolder(dir: string): Promise<ModelFolder> {
  const meta = await readModelMeta(dir);
  const weights = loadWeights(findWeights(dir), meta.config);
  return { ...meta, weights };
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
    throw new ModelFormatError(
      file,
      'not found; sharded safetensors (model.safetensors.index.json) are not supported, save the model as one model.safetensors',
    );
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
    m.set(`${h}ln_1.weight`, [E]);
    m.set(`${h}ln_1.bias`, [E]);
    m.set(`${h}attn.c_attn.weight`, [E, 3 * E]);
    m.set(`${h}attn.c_attn.bias`, [3 * E]);
    m.set(`${h}attn.c_proj.weight`, [E, E]);
    m.set(`${h}attn.c_proj.bias`, [E]);
    m.set(`${h}ln_2.weight`, [E]);
    m.set(`${h}ln_2.bias`, [E]);
    m.set(`${h}mlp.c_fc.weight`, [E, 4 * E]);
    m.set(`${h}mlp.c_fc.bias`, [4 * E]);
    m.set(`${h}mlp.c_proj.weight`, [4 * E, E]);
    m.set(`${h}mlp.c_proj.bias`, [E]);
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
      ln1g: get(`${h}ln_1.weight`),
      ln1b: get(`${h}ln_1.bias`),
      attnW: get(`${h}attn.c_attn.weight`),
      attnB: get(`${h}attn.c_attn.bias`),
      projW: get(`${h}attn.c_proj.weight`),
      projB: get(`${h}attn.c_proj.bias`),
      ln2g: get(`${h}ln_2.weight`),
      ln2b: get(`${h}ln_2.bias`),
      fcW: get(`${h}mlp.c_fc.weight`),
      fcB: get(`${h}mlp.c_fc.bias`),
      fcProjW: get(`${h}mlp.c_proj.weight`),
      fcProjB: get(`${h}mlp.c_proj.bias`),
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
