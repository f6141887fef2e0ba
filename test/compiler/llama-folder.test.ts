/**
 * Llama-family folders as people have them: sharded and BF16 checkpoints load to the same weights
 * and tokens as one F32 file; config.json and checkpoint problems get an error naming the file and
 * the field; a model too big for the wasm heap is refused before any weight is read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { generateRows, loadModel, makeModel, VariantCache } from '../../src/compiler/index.js';
import { readModelFolder } from '../../src/compiler/model-folder.js';
import { backendSizeProblem } from '../../src/compiler/model-size.js';
import { readSafetensors, writeSafetensors } from '../../src/compiler/safetensors.js';
import { parseModelConfig } from '../../src/model/config.js';
import { editJson, rejectsFormat } from '../helpers/format-errors.js';
import { params, policy, tempDir } from '../helpers/compiler-fixtures.js';

test('a BF16 checkpoint in 3 shards loads to the same weights and greedy tokens as the same values in one F32 file', async () => {
  const root = tempDir();
  const sharded = path.join(root, 'sharded');
  await makeModel({ arch: 'llama', heads: 4, kvHeads: 2, dtype: 'BF16', shards: 3, seed: 5, out: sharded });
  assert.ok(fs.existsSync(path.join(sharded, 'model.safetensors.index.json')));
  assert.equal(fs.readdirSync(sharded).filter((f) => /^model-0000\d-of-00003\.safetensors$/.test(f)).length, 3);
  // The same values (BF16 is exact in F32) written as one F32 model.safetensors.
  const single = path.join(root, 'single');
  fs.cpSync(sharded, single, { recursive: true });
  const all: Record<string, ReturnType<typeof readSafetensors> extends Map<string, infer T> ? T : never> = {};
  for (const f of fs.readdirSync(single).filter((n) => n.endsWith('.safetensors'))) {
    for (const [n, t] of readSafetensors(path.join(single, f))) all[n] = { ...t, dtype: 'F32' };
    fs.rmSync(path.join(single, f));
  }
  fs.rmSync(path.join(single, 'model.safetensors.index.json'));
  writeSafetensors(path.join(single, 'model.safetensors'), all);

  const a = await loadModel(sharded, 'sharded');
  const b = await loadModel(single, 'single');
  const wa = a.as('llama').folder.weights;
  const wb = b.as('llama').folder.weights;
  assert.deepEqual(wa.embed, wb.embed);
  assert.deepEqual(wa.blocks[1].downW, wb.blocks[1].downW);
  const cache = new VariantCache();
  const prompt = await a.folder.tokenizer.encode('Sharded checkpoints are common');
  const run = (m: typeof a) =>
    generateRows(m, [{ promptIds: prompt, params: params(m, { max_new_tokens: 8 }) }], { policy: policy('16'), cache });
  assert.deepEqual((await run(a))[0].tokenIds, (await run(b))[0].tokenIds);
  await cache.dispose();
  a.dispose();
  b.dispose();
});

test('folder problems name the file and the field: model_type, rope_scaling, a missing shard, a missing tensor', async () => {
  const dir = path.join(tempDir(), 'bad');
  await makeModel({ arch: 'llama', shards: 2, out: dir });
  const config = path.join(dir, 'config.json');
  const original = fs.readFileSync(config, 'utf-8');

  editJson(config, (j) => (j.model_type = 'gemma2'));
  await rejectsFormat(readModelFolder(dir), config, /"model_type" "gemma2" is not supported \(supported: gpt2, llama, qwen2, mistral\)/);

  fs.writeFileSync(config, original);
  editJson(config, (j) => (j.rope_scaling = { rope_type: 'yarn', factor: 4 }));
  await rejectsFormat(readModelFolder(dir), config, /"rope_scaling" of type "yarn" is not supported/);
  editJson(config, (j) => (j.rope_scaling = { type: 'dynamic', factor: 2 }));
  await rejectsFormat(readModelFolder(dir), config, /"rope_scaling" of type "dynamic" is not supported/);
  editJson(config, (j) => (j.rope_scaling = { rope_type: 'llama3', factor: 8 }));
  await rejectsFormat(readModelFolder(dir), config, /"rope_scaling.low_freq_factor" must be a positive number/);

  fs.writeFileSync(config, original);
  editJson(config, (j) => (j.num_key_value_heads = 3));
  await rejectsFormat(readModelFolder(dir), config, /num_attention_heads 2 is not a multiple of num_key_value_heads 3/);
  editJson(config, (j) => {
    j.num_key_value_heads = 1;
    j.hidden_act = 'gelu';
  });
  await rejectsFormat(readModelFolder(dir), config, /hidden_act "gelu" is not supported/);

  fs.writeFileSync(config, original);
  const shard = path.join(dir, 'model-00002-of-00002.safetensors');
  fs.renameSync(shard, `${shard}.away`);
  await rejectsFormat(readModelFolder(dir), shard, /file not found: model\.safetensors\.index\.json lists it as the shard of /);
  fs.renameSync(`${shard}.away`, shard);

  // A config that says the q/k/v projections have biases, over a checkpoint without them.
  editJson(config, (j) => (j.attention_bias = true));
  await rejectsFormat(
    readModelFolder(dir),
    path.join(dir, 'model.safetensors.index.json'),
    /tensor model\.layers\.0\.self_attn\.q_proj\.bias is missing/,
  );
  // An untied config with no lm_head.weight in the checkpoint.
  fs.writeFileSync(config, original);
  const index = path.join(dir, 'model.safetensors.index.json');
  editJson(index, (j) => delete (j.weight_map as Record<string, string>)['lm_head.weight']);
  await rejectsFormat(readModelFolder(dir), index, /lm_head\.weight is missing, and config\.json has tie_word_embeddings false/);
});

test("Mistral's sliding window bounds the context: requests are planned within it", async () => {
  const dir = path.join(tempDir(), 'mistral-window');
  await makeModel({ arch: 'mistral', positions: 128, slidingWindow: 48, out: dir });
  const m = await loadModel(dir, 'mw');
  assert.equal(m.contextLength, 48);
  const prompt = Array.from({ length: 30 }, (_, i) => 100 + i);
  // 30 + 16 fits the window of 48: the key is capped to it (P + N ≤ 48) and the request runs.
  const cache = new VariantCache();
  const got = await generateRows(m, [{ promptIds: prompt, params: params(m, { max_new_tokens: 16 }) }], { cache });
  assert.equal(got[0].tokenIds.length, 16);
  // A variant wider than the window is refused when compiled, naming the window.
  await assert.rejects(cache.get(m, { model: 'mw', P: 64, N: 16, strategy: 'greedy' }, 1), /sliding_window 48/);
  await cache.dispose();
  m.dispose();
});

test('a model too big for the wasm heap is refused before its weights are read, naming its size and the backends that hold it', async () => {
  // Qwen2.5-7B's config.json, over a folder with no weights at all: the check comes first.
  const dir = path.join(tempDir(), 'qwen7b');
  await makeModel({ arch: 'qwen2', out: dir });
  const config = path.join(dir, 'config.json');
  editJson(config, (j) => {
    Object.assign(j, {
      hidden_size: 3584,
      intermediate_size: 18944,
      num_hidden_layers: 28,
      num_attention_heads: 28,
      num_key_value_heads: 4,
      vocab_size: 152064,
      tie_word_embeddings: false,
    });
  });
  fs.rmSync(path.join(dir, 'model.safetensors'));
  await rejectsFormat(
    loadModel(dir),
    config,
    /7\.62B parameters need \d\d\.\d\d GiB of the wasm heap \(28\.37 GiB of float32 weights.*tensorflow.*webgpu/,
  );
  const arch = parseModelConfig(JSON.parse(fs.readFileSync(config, 'utf-8'))).arch;
  assert.ok(Math.abs(arch.params - 7.6e9) < 0.05e9, `Qwen2.5-7B has 7.6B parameters, counted ${arch.params}`);
  assert.equal(backendSizeProblem(arch, 'tensorflow'), null);
  // Qwen2.5-0.5B does not: 2.35 GiB of weights, twice that with XNNPACK's packed copies (this shape
  // ran out of wasm memory in the benchmark). SmolLM2-360M does (1.5 GiB, 2.9 with the copies).
  const small = parseModelConfig({
    model_type: 'qwen2',
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    max_position_embeddings: 32768,
    tie_word_embeddings: true,
  }).arch;
  assert.ok(Math.abs(small.params - 494e6) < 2e6, `Qwen2.5-0.5B has 494M parameters, counted ${small.params}`);
  assert.match(backendSizeProblem(small, 'wasm') ?? '', /0\.49B parameters need 4\.\d\d GiB of the wasm heap \(2\.35 GiB/);
  // With the native kernels the packed copies live outside the heap: the weights alone fit.
  assert.equal(backendSizeProblem(small, 'wasm', true), null);
  assert.match(
    backendSizeProblem(arch, 'wasm', true) ?? '',
    /7\.62B parameters need 28\.37 GiB of the wasm heap \(28\.37 GiB of float32 weights\)/,
  );
  const smol360 = parseModelConfig({
    model_type: 'llama',
    hidden_size: 960,
    intermediate_size: 2560,
    num_hidden_layers: 32,
    num_attention_heads: 15,
    num_key_value_heads: 5,
    vocab_size: 49152,
    max_position_embeddings: 8192,
    tie_word_embeddings: true,
  }).arch;
  assert.ok(Math.abs(smol360.params - 362e6) < 2e6, `SmolLM2-360M has 362M parameters, counted ${smol360.params}`);
  assert.equal(backendSizeProblem(smol360, 'wasm'), null);
});
