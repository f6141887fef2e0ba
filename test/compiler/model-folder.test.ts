import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensors, writeSafetensors, type FloatTensor } from '../../src/compiler/safetensors.js';
import { readModelFolder } from '../../src/compiler/model-folder.js';
import { readGpt2Folder } from '../helpers/compiler-fixtures.js';
import { renderChat } from '../../src/model/chat-template.js';
import { makeModel } from '../../src/compiler/make-model.js';
import { makeModelCommand } from '../../src/cli/make-model.js';
import { editJson, rejectsFormat, throwsFormat } from '../helpers/format-errors.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'batchgen-model-'));
let counter = 0;
const tmp = (): string => fs.mkdtempSync(path.join(root, `t${counter++}-`));

/** A small model (E 16, 2 heads, 2 layers, 32 positions, GPT-2 vocabulary) written once, copied per test. */
const E = 16;
const base = path.join(root, 'base');
await makeModel({ out: base, layers: 2, heads: 2, embd: E, positions: 32, seed: 3 });

function copyModel(): string {
  const dir = tmp();
  fs.cpSync(base, dir, { recursive: true });
  return dir;
}

function editWeights(dir: string, edit: (t: Record<string, FloatTensor>) => void): void {
  const file = path.join(dir, 'model.safetensors');
  const tensors = Object.fromEntries(readSafetensors(file));
  edit(tensors);
  writeSafetensors(file, tensors);
}

/** A safetensors file from a hand-written header and data. */
function rawSafetensors(file: string, header: unknown, data: Uint8Array): void {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, data]));
}

// ---- safetensors ----

test('safetensors round trip: F32 exact, F16 and BF16 rounded to nearest even', () => {
  const file = path.join(tmp(), 'x.safetensors');
  const values = [0, -0, 1, -2.5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 65519, 65520, 1e-8, Math.PI];
  const src = new Float32Array(values);
  writeSafetensors(
    file,
    {
      f32: { dtype: 'F32', shape: [3, 4], data: src },
      f16: { dtype: 'F16', shape: [12], data: src },
      bf16: { dtype: 'BF16', shape: [2, 2, 3], data: src },
      empty: { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
    },
    { format: 'pt' },
  );
  const buf = fs.readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  assert.equal(headerLen % 8, 0, 'header padded to 8 bytes');
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString());
  assert.deepEqual(header.__metadata__, { format: 'pt' });
  assert.deepEqual(header.f32.data_offsets, [0, 48]); // widest dtype first, then by name
  assert.equal(buf.length, 8 + headerLen + 48 + 24 + 24);

  const t = readSafetensors(file);
  assert.deepEqual([...t.keys()].sort(), ['bf16', 'empty', 'f16', 'f32']);
  assert.deepEqual(t.get('f32')!.data, src);
  assert.deepEqual(t.get('f32')!.shape, [3, 4]);
  assert.equal(t.get('f16')!.dtype, 'F16');
  assert.deepEqual(t.get('bf16')!.shape, [2, 2, 3]);
  assert.deepEqual(t.get('empty')!.shape, [0, 5]);
  // F16: spacing 2^-10 at 1; ties go to the even mantissa; 65520 is the tie between 65504 and 2^16: Inf.
  const f16 = [...t.get('f16')!.data];
  assert.deepEqual(f16.slice(0, 4), [0, -0, 1, -2.5]);
  assert.equal(f16[4], 1);
  assert.equal(f16[5], 1 + 2 ** -9);
  assert.equal(f16[8], 65504);
  assert.equal(f16[9], Infinity);
  assert.equal(f16[10], 2 ** -24 * Math.round(1e-8 / 2 ** -24)); // subnormal
  assert.equal(f16[11], 3.140625);
  // BF16: spacing 2^-7 at 1.
  const bf16 = [...t.get('bf16')!.data];
  assert.equal(bf16[6], 1);
  assert.equal(bf16[7], 1 + 2 ** -6);
  assert.equal(bf16[11], 3.140625);
  assert.equal(bf16[9], 65536);
});

test('safetensors: an unsupported dtype is refused, naming it', () => {
  const file = path.join(tmp(), 'i64.safetensors');
  rawSafetensors(file, { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, new Uint8Array(16));
  throwsFormat(() => readSafetensors(file), file, /tensor ids has dtype I64; only F32, F16 and BF16/);
});

test('safetensors: truncated files are refused', () => {
  const dir = tmp();
  const file = path.join(dir, 'ok.safetensors');
  writeSafetensors(file, { a: { dtype: 'F32', shape: [4, 4], data: new Float32Array(16) } });
  const full = fs.readFileSync(file);
  const cut = path.join(dir, 'cut.safetensors');
  fs.writeFileSync(cut, full.subarray(0, full.length - 5));
  throwsFormat(() => readSafetensors(cut), cut, /truncated: tensor a ends at data byte 64/);
  fs.writeFileSync(cut, full.subarray(0, 20));
  throwsFormat(() => readSafetensors(cut), cut, /truncated: header says/);
  fs.writeFileSync(cut, full.subarray(0, 5));
  throwsFormat(() => readSafetensors(cut), cut, /truncated/);
});

test('safetensors: bad headers and offsets are refused', () => {
  const dir = tmp();
  const f = path.join(dir, 'bad.safetensors');
  rawSafetensors(f, { a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, new Uint8Array(16));
  throwsFormat(() => readSafetensors(f), f, /hold 12 bytes, but F32 \[2, 2\] needs 16/);
  rawSafetensors(
    f,
    { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
    new Uint8Array(16),
  );
  throwsFormat(() => readSafetensors(f), f, /overlap/);
  rawSafetensors(f, { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, new Uint8Array(4));
  throwsFormat(() => readSafetensors(f), f, /shape/);
  rawSafetensors(f, { a: { dtype: 'Q4', shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
  throwsFormat(() => readSafetensors(f), f, /unknown dtype "Q4"/);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(4n);
  fs.writeFileSync(f, Buffer.concat([len, Buffer.from('{no}')]));
  throwsFormat(() => readSafetensors(f), f, /header is not valid JSON/);
  len.writeBigUInt64LE(1n << 40n);
  fs.writeFileSync(f, Buffer.concat([len, Buffer.from('{}')]));
  throwsFormat(() => readSafetensors(f), f, /header length/);
  const missing = path.join(dir, 'missing.safetensors');
  throwsFormat(() => readSafetensors(missing), missing, /cannot open: ENOENT/);
});

// ---- model folder ----

test('reads a model folder written by makeModel', async () => {
  const m = await readGpt2Folder(base);
  assert.deepEqual(m.config, { vocab_size: 50257, n_positions: 32, n_embd: E, n_layer: 2, n_head: 2, layer_norm_epsilon: 1e-5 });
  assert.equal(m.weights.blocks.length, 2);
  assert.equal(m.weights.wte.length, 50257 * E);
  assert.equal(m.weights.wpe.length, 32 * E);
  assert.equal(m.weights.blocks[1].attnW.length, E * 3 * E);
  assert.equal(m.weights.blocks[1].fcProjW.length, 4 * E * E);
  assert.equal(m.weights.lmHead, null);
  assert.deepEqual(m.defaults, { eos_token_id: [50256], pad_token_id: 50256 });
  assert.deepEqual(await m.tokenizer.encode('TensorFlow is'), [51, 22854, 37535, 318]);
  // Layer norms: gains near 1, biases near 0, but not exactly (so tests exercise them).
  const g = m.weights.blocks[0].ln1g;
  assert.ok(g.every((x) => Math.abs(x - 1) < 0.5) && g.some((x) => x !== 1));
  assert.ok(m.weights.blocks[0].ln1b.some((x) => x !== 0));
  // Matrices: std about 0.02.
  const w = m.weights.wte;
  const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
  assert.ok(Math.abs(std - 0.02) < 0.001, `std ${std}`);
});

test('makeModel is deterministic in its seed, and F16 / BF16 folders load', async () => {
  const a = tmp();
  const b = tmp();
  const c = tmp();
  await makeModel({ out: a, embd: 8, heads: 2, layers: 1, positions: 8, vocab: 100, seed: 5 });
  await makeModel({ out: b, embd: 8, heads: 2, layers: 1, positions: 8, vocab: 100, seed: 5 });
  await makeModel({ out: c, embd: 8, heads: 2, layers: 1, positions: 8, vocab: 100, seed: 6 });
  const bytes = (d: string) => fs.readFileSync(path.join(d, 'model.safetensors'));
  assert.ok(bytes(a).equals(bytes(b)));
  assert.ok(!bytes(a).equals(bytes(c)));
  const small = await readGpt2Folder(a);
  assert.deepEqual(small.defaults, { eos_token_id: [99], pad_token_id: 99 }); // vocab below GPT-2's: the last id
  for (const dtype of ['F16', 'BF16'] as const) {
    const d = tmp();
    await makeModel({ out: d, embd: 8, heads: 2, layers: 1, positions: 8, vocab: 100, seed: 5, dtype });
    const m = await readGpt2Folder(d);
    const t = readSafetensors(path.join(d, 'model.safetensors'));
    assert.equal(t.get('wte.weight')!.dtype, dtype);
    // Same values as the F32 model, to the precision of the dtype.
    const tol = dtype === 'F16' ? 2 ** -11 : 2 ** -8;
    small.weights.wte.forEach((x, i) => assert.ok(Math.abs(m.weights.wte[i] - x) <= Math.abs(x) * tol + 1e-7));
  }
});

test('Hugging Face layouts: transformer. prefix, attn.bias / masked_bias buffers, lm_head', async () => {
  const dir = copyModel();
  editWeights(dir, (t) => {
    for (const name of Object.keys(t)) {
      t[`transformer.${name}`] = t[name];
      delete t[name];
    }
    for (const i of [0, 1]) {
      t[`transformer.h.${i}.attn.bias`] = { dtype: 'F32', shape: [1, 1, 32, 32], data: new Float32Array(32 * 32).fill(1) };
      t[`transformer.h.${i}.attn.masked_bias`] = { dtype: 'F32', shape: [], data: new Float32Array([-1e4]) };
    }
    t['lm_head.weight'] = { dtype: 'F32', shape: [50257, E], data: new Float32Array(50257 * E).fill(0.5) };
  });
  const m = await readGpt2Folder(dir);
  const ref = await readGpt2Folder(base);
  assert.deepEqual(m.weights.blocks[1].attnW, ref.weights.blocks[1].attnW);
  assert.ok(m.weights.lmHead);
  assert.equal(m.weights.lmHead!.length, 50257 * E);
  assert.equal(m.weights.lmHead![7], 0.5);
});

test('the layout of the real openai-community/gpt2 folder (no prefix, attn.bias buffers, HF config) loads', async () => {
  const dir = copyModel();
  editWeights(dir, (t) => {
    for (const i of [0, 1]) t[`h.${i}.attn.bias`] = { dtype: 'F32', shape: [1, 1, 32, 32], data: new Float32Array(32 * 32) };
  });
  const hf = {
    activation_function: 'gelu_new',
    architectures: ['GPT2LMHeadModel'],
    attn_pdrop: 0.1,
    bos_token_id: 50256,
    embd_pdrop: 0.1,
    eos_token_id: 50256,
    initializer_range: 0.02,
    layer_norm_epsilon: 1e-5,
    model_type: 'gpt2',
    n_ctx: 32,
    n_embd: E,
    n_head: 2,
    n_layer: 2,
    n_positions: 32,
    resid_pdrop: 0.1,
    summary_activation: null,
    summary_first_dropout: 0.1,
    summary_proj_to_labels: true,
    summary_type: 'cls_index',
    summary_use_proj: true,
    task_specific_params: { 'text-generation': { do_sample: true, max_length: 50 } },
    vocab_size: 50257,
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(hf));
  fs.writeFileSync(
    path.join(dir, 'generation_config.json'),
    JSON.stringify({ _from_model_config: true, bos_token_id: 50256, eos_token_id: 50256, transformers_version: '4.26.0.dev0' }),
  );
  const m = await readGpt2Folder(dir);
  assert.deepEqual(m.defaults, { eos_token_id: [50256], pad_token_id: 50256 });
  assert.equal(m.config.n_positions, 32);
});

test('a missing tensor, a misshapen tensor and an unexpected tensor are refused by name', async () => {
  const dir = copyModel();
  const file = path.join(dir, 'model.safetensors');
  editWeights(dir, (t) => delete t['h.1.mlp.c_fc.bias']);
  await rejectsFormat(readModelFolder(dir), file, /tensor h\.1\.mlp\.c_fc\.bias is missing/);

  const dir2 = copyModel();
  const file2 = path.join(dir2, 'model.safetensors');
  editWeights(dir2, (t) => {
    t['h.1.attn.c_attn.weight'] = { dtype: 'F32', shape: [3 * E, E], data: new Float32Array(3 * E * E) };
  });
  await rejectsFormat(readModelFolder(dir2), file2, /tensor h\.1\.attn\.c_attn\.weight has shape \[48, 16\], expected \[16, 48\]/);

  const dir3 = copyModel();
  const file3 = path.join(dir3, 'model.safetensors');
  editWeights(dir3, (t) => {
    t['h.2.ln_1.weight'] = { dtype: 'F32', shape: [E], data: new Float32Array(E) };
  });
  await rejectsFormat(readModelFolder(dir3), file3, /unexpected tensor h\.2\.ln_1\.weight/);
});

test('pickles are refused and never opened', async () => {
  const dir = copyModel();
  fs.rmSync(path.join(dir, 'model.safetensors'));
  // A protocol-0 pickle that would run a shell command when unpickled.
  const marker = path.join(dir, 'pwned');
  fs.writeFileSync(path.join(dir, 'pytorch_model.bin'), `cos\nsystem\n(S'touch ${marker}'\ntR.`);
  await rejectsFormat(readModelFolder(dir), path.join(dir, 'model.safetensors'), /pytorch_model\.bin.*pickle.*never loaded.*safetensors/s);
  assert.equal(fs.existsSync(marker), false);
});

test('config.json: missing fields, n_ctx fallback, bad values', async () => {
  const required = ['vocab_size', 'n_positions (or n_ctx)', 'n_embd', 'n_layer', 'n_head'];
  for (const field of required) {
    const dir = copyModel();
    const file = path.join(dir, 'config.json');
    editJson(file, (j) => {
      delete j[field.split(' ')[0]];
      if (field.startsWith('n_positions')) delete j.n_ctx;
    });
    await rejectsFormat(readModelFolder(dir), file, new RegExp(`missing required field "${field.replace(/[()]/g, '\\$&')}"`));
  }
  const dir = copyModel();
  const file = path.join(dir, 'config.json');
  editJson(file, (j) => {
    delete j.n_positions;
    delete j.layer_norm_epsilon;
  });
  const m = await readGpt2Folder(dir);
  assert.equal(m.config.n_positions, 32);
  assert.equal(m.config.layer_norm_epsilon, 1e-5);

  editJson(file, (j) => (j.n_head = 3));
  await rejectsFormat(readModelFolder(dir), file, /n_embd 16 is not divisible by n_head 3/);
  editJson(file, (j) => (j.n_head = '2'));
  await rejectsFormat(readModelFolder(dir), file, /"n_head" must be a positive integer/);
  editJson(file, (j) => {
    j.n_head = 2;
    j.activation_function = 'relu';
  });
  await rejectsFormat(readModelFolder(dir), file, /activation_function "relu" is not supported/);
  fs.writeFileSync(file, '{ not json');
  await rejectsFormat(readModelFolder(dir), file, /not valid JSON/);
  fs.rmSync(file);
  await rejectsFormat(readModelFolder(dir), file, /file not found/);
});

test('missing folder, missing tokenizer.json, missing model.safetensors', async () => {
  const nowhere = path.join(root, 'does-not-exist');
  await rejectsFormat(readModelFolder(nowhere), nowhere, /model folder not found/);
  const dir = copyModel();
  fs.rmSync(path.join(dir, 'tokenizer.json'));
  await rejectsFormat(readModelFolder(dir), path.join(dir, 'tokenizer.json'), /not found/);
  const dir2 = copyModel();
  fs.rmSync(path.join(dir2, 'model.safetensors'));
  await rejectsFormat(readModelFolder(dir2), path.join(dir2, 'model.safetensors'), /file not found/);
});

test('generation_config.json: eos list, pad, parameters, unknown keys; absent file', async () => {
  const dir = copyModel();
  const gen = path.join(dir, 'generation_config.json');
  fs.writeFileSync(
    gen,
    JSON.stringify({
      eos_token_id: [50256, 198],
      max_new_tokens: 40,
      do_sample: true,
      top_k: 20,
      top_p: 0.9,
      temperature: 0.7,
      num_beams: 1,
      early_stopping: 'never',
      max_length: 99,
      transformers_version: 'x',
    }),
  );
  let m = await readGpt2Folder(dir);
  assert.deepEqual(m.defaults, {
    eos_token_id: [50256, 198],
    pad_token_id: 50256,
    max_new_tokens: 40,
    do_sample: true,
    top_k: 20,
    top_p: 0.9,
    temperature: 0.7,
    num_beams: 1,
    early_stopping: 'never',
  });

  fs.writeFileSync(gen, JSON.stringify({ eos_token_id: 198, pad_token_id: 0 }));
  m = await readGpt2Folder(dir);
  assert.deepEqual(m.defaults, { eos_token_id: [198], pad_token_id: 0 });

  fs.writeFileSync(gen, JSON.stringify({ temperature: -1 }));
  await rejectsFormat(readModelFolder(dir), gen, /"temperature": -1 is not a valid value/);
  fs.writeFileSync(gen, JSON.stringify({ eos_token_id: 60000 }));
  await rejectsFormat(readModelFolder(dir), gen, /"eos_token_id" must be a token id/);

  // No generation_config.json: EOS from config.json.
  fs.rmSync(gen);
  editJson(path.join(dir, 'config.json'), (j) => (j.eos_token_id = 13));
  m = await readGpt2Folder(dir);
  assert.deepEqual(m.defaults, { eos_token_id: [13], pad_token_id: 13 });
  // Neither: GPT-2's <|endoftext|>.
  editJson(path.join(dir, 'config.json'), (j) => delete j.eos_token_id);
  m = await readGpt2Folder(dir);
  assert.deepEqual(m.defaults, { eos_token_id: [50256], pad_token_id: 50256 });
});

// ---- CLI ----

async function runCli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const ow = process.stdout.write.bind(process.stdout);
  const ew = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    return { code: await makeModelCommand(argv), out, err };
  } finally {
    process.stdout.write = ow;
    process.stderr.write = ew;
  }
}

test('make-model command: writes a folder and prints it; bad flags are exit code 2 with a message', async () => {
  const dir = path.join(tmp(), 'm');
  const ok = await runCli([
    '--out',
    dir,
    '--layers',
    '1',
    '--embd',
    '8',
    '--heads',
    '2',
    '--positions',
    '8',
    '--vocab',
    '300',
    '--dtype',
    'bf16',
  ]);
  assert.equal(ok.code, 0, ok.err);
  assert.equal(ok.out.trim(), dir);
  const m = await readGpt2Folder(dir);
  assert.equal(m.config.n_layer, 1);
  assert.equal(readSafetensors(path.join(dir, 'model.safetensors')).get('wte.weight')!.dtype, 'BF16');

  for (const [argv, re] of [
    [['--layers', '2'], /--out DIR is required/],
    [['--out', dir, '--layers', 'two'], /--layers must be a positive integer, got "two"/],
    [['--out', dir, '--layers', '0'], /--layers must be a positive integer/],
    [['--out', dir, '--dtype', 'F64'], /--dtype must be F32, F16 or BF16/],
    [['--out', dir, '--bogus'], /Unknown option '--bogus'/],
    [['--out', dir, '--embd', '10', '--heads', '3'], /embd 10 must be divisible by heads 3/],
  ] as const) {
    const r = await runCli([...argv]);
    assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`);
    assert.match(r.err, re);
  }
});

test('make-model --arch: each family writes a folder that loads as that model_type, with its flags', async () => {
  const dir = path.join(tmp(), 'q');
  const ok = await runCli(['--out', dir, '--arch', 'qwen2', '--heads', '4', '--kv-heads', '1', '--shards', '2', '--dtype', 'BF16']);
  assert.equal(ok.code, 0, ok.err);
  const m = await readModelFolder(dir);
  assert.equal(m.family, 'llama');
  assert.equal(m.arch.modelType, 'qwen2');
  assert.equal(m.arch.kvHeads, 1);
  assert.equal(m.arch.tied, true);
  assert.ok(fs.existsSync(path.join(dir, 'model.safetensors.index.json')));
  const l = path.join(tmp(), 'l');
  assert.equal((await runCli(['--out', l, '--arch', 'llama', '--untied', '--rope-scaling', 'llama3', '--intermediate', '96'])).code, 0);
  const ml = await readModelFolder(l);
  assert.ok(ml.family === 'llama' && ml.config.rope_scaling?.rope_type === 'llama3' && !ml.config.tie_word_embeddings);
  assert.equal(ml.arch.intermediate, 96);
  const w = path.join(tmp(), 'w');
  assert.equal((await runCli(['--out', w, '--arch', 'mistral', '--sliding-window', '64'])).code, 0);
  assert.equal((await readModelFolder(w)).arch.contextLength, 64);
  for (const [argv, re] of [
    [['--out', dir, '--arch', 'gemma'], /--arch must be one of gpt2, llama, qwen2, mistral, got "gemma"/],
    [['--out', dir, '--arch', 'llama', '--heads', '4', '--kv-heads', '3'], /heads 4 must be a multiple of kvHeads 3/],
    [['--out', dir, '--tied', '--untied'], /--tied and --untied are exclusive/],
    [['--out', dir, '--rope-scaling', 'yarn'], /--rope-scaling must be llama3/],
    [['--out', dir, '--arch', 'qwen2', '--rope-scaling', 'llama3'], /ropeScaling is for arch llama/],
    [['--out', dir, '--kv-heads', '1'], /kvHeads is for the Llama family/],
  ] as const) {
    const r = await runCli([...argv]);
    assert.equal(r.code, 2, `${argv.join(' ')}: ${r.err}`);
    assert.match(r.err, re);
  }
});

test('make-model --chat-template: a Llama-family folder with a template, its tokens whole, its end of turn an EOS', async () => {
  for (const [arch, template, turnEnd, bos] of [
    ['qwen2', 'chatml', 50258, null],
    ['llama', 'llama3', 50263, 50259],
  ] as const) {
    const dir = path.join(tmp(), `chat-${arch}`);
    assert.equal((await runCli(['--out', dir, '--arch', arch, '--chat-template', template])).code, 0);
    const m = await readModelFolder(dir);
    assert.ok(m.chat, `${arch}: no chat template`);
    const text = renderChat(m.chat!, [{ role: 'user', content: 'Hi' }], arch);
    const ids = await m.tokenizer.encode(text, { addSpecialTokens: false });
    if (template === 'chatml') {
      assert.equal(text, '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
      assert.deepEqual([ids[0], ids.filter((i) => i === 50258).length], [50257, 1]);
    } else {
      assert.equal(
        text,
        '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
      );
      assert.equal(ids[0], bos);
    }
    assert.ok(m.defaults.eos_token_id.includes(turnEnd), `${arch}: end of turn ${turnEnd} not an EOS`);
    // A plain prompt gets the post-processor's BOS where the family adds one.
    const plain = await m.tokenizer.encode('Hi');
    assert.equal(plain[0] === 50259, bos !== null);
  }
  const r = await runCli(['--out', path.join(tmp(), 'g'), '--chat-template', 'chatml']);
  assert.equal(r.code, 2);
  assert.match(r.err, /a chat template needs a Llama-family folder/);
});
