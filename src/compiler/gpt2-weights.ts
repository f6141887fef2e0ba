/**
 * GPT-2's weight names and shapes (Hugging Face's GPT2LMHeadModel, Conv1D layout [in, out]), checked
 * against a checkpoint and gathered into Gpt2Weights.
 */
import type { Gpt2Config } from '../model/config.js';
import { ModelFormatError } from '../shared/errors.js';
import type { Checkpoint } from './checkpoint.js';
import type { FloatTensor } from './safetensors.js';
import type { Gpt2BlockWeights, Gpt2Weights } from './types.js';

/** Buffers some GPT-2 files carry (the causal mask and its fill value): recomputed, never read. */
const IGNORED = /^h\.\d+\.attn\.(bias|masked_bias)$/;

function stripPrefix(name: string): string {
  return name.startsWith('transformer.') ? name.slice('transformer.'.length) : name;
}

/** Tensors of a GPT-2 checkpoint worth reading (not the recomputed buffers). */
export function gpt2Include(name: string): boolean {
  return !IGNORED.test(stripPrefix(name));
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

export function gpt2Weights(ckpt: Checkpoint, config: Gpt2Config): Gpt2Weights {
  const byName = new Map<string, FloatTensor>();
  for (const [name, t] of ckpt.tensors) {
    const short = stripPrefix(name);
    if (byName.has(short))
      throw new ModelFormatError(ckpt.fileOf(name), `tensor ${short} is present both with and without the "transformer." prefix`);
    byName.set(short, t);
  }
  const expected = expectedShapes(config);
  expected.set('lm_head.weight', [config.vocab_size, config.n_embd]);
  checkTensors(ckpt, byName, expected, new Set(['lm_head.weight']), `a GPT-2 with n_layer ${config.n_layer}`);
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

/**
 * Every expected tensor present (but the optional ones) with its shape, and nothing unexpected;
 * `byName` maps the names used in `expected` to the checkpoint's tensors.
 */
export function checkTensors(
  ckpt: Checkpoint,
  byName: Map<string, FloatTensor>,
  expected: Map<string, number[]>,
  optional: Set<string>,
  what: string,
): void {
  const extra = [...byName.keys()].filter((n) => !expected.has(n));
  if (extra.length > 0) {
    const shown = extra.slice(0, 5).join(', ') + (extra.length > 5 ? `, ... (${extra.length} in all)` : '');
    throw new ModelFormatError(ckpt.fileOf(extra[0]), `unexpected tensor${extra.length > 1 ? 's' : ''} ${shown} for ${what}`);
  }
  for (const [name, shape] of expected) {
    const t = byName.get(name);
    if (!t) {
      if (optional.has(name)) continue;
      throw new ModelFormatError(ckpt.file, `tensor ${name} is missing`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ModelFormatError(ckpt.fileOf(name), `tensor ${name} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`);
    }
  }
}
