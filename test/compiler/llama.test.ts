/**
 * The Llama family (llama, qwen2, mistral) against an independent float64 reference: prefill logits
 * within 1e-4 relative, batched with left padding and alone; the KV cache's decode steps against a
 * full recompute; greedy tokens; grouped-query attention at 4:1 and 2:1, rope_scaling llama3, Qwen2's
 * biases with a tied head, Mistral. Then the shared machinery on these models: padding and batch
 * invariance, zero retraces after warm-up, no tensor leaks, several EOS ids.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateRows, retraces, tf, VariantCache } from '../../src/compiler/index.js';
import { recentRetraces } from '../../src/compiler/shape-tracker.js';
import { assertPrefillMatches, forwardSteps, params, policy, randomIds } from '../helpers/compiler-fixtures.js';
import { type LlamaModel, llamaModel, llamaRefOf } from '../helpers/llama-fixtures.js';
import { relativeError } from '../helpers/reference-gpt2.js';
import { llamaReferenceGreedy, llamaReferenceLogits, refInvFreq } from '../helpers/reference-llama.js';

const TOL = 1e-4;
const TEXTS = ['The meaning of life is', 'Hello', 'Rotary embeddings rotate pairs of features by position', 'A B C D E F G'];

let models: Record<'llama41' | 'llama21' | 'qwen2' | 'mistral', LlamaModel>;
const prompts = new Map<LlamaModel, number[][]>();
let cache: VariantCache;

before(async () => {
  models = {
    // GQA 4:1, untied, rope_scaling llama3 with a short original context, so that the 16 frequencies
    // of a 16-wide head fall in all three of its bands (kept, smoothed, divided by factor).
    llama41: await llamaModel(
      'llama41',
      {
        arch: 'llama',
        heads: 8,
        kvHeads: 2,
        embd: 128,
        seed: 21,
        ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
      },
      0.5,
    ),
    llama21: await llamaModel('llama21', { arch: 'llama', heads: 4, kvHeads: 2, seed: 22 }, 0.5),
    qwen2: await llamaModel('qwen2', { arch: 'qwen2', heads: 4, kvHeads: 2, seed: 23 }),
    mistral: await llamaModel('mistral', { arch: 'mistral', heads: 4, kvHeads: 1, seed: 24 }, 0.5),
  };
  for (const m of Object.values(models)) prompts.set(m, await Promise.all(TEXTS.map((t) => m.folder.tokenizer.encode(t))));
  cache = new VariantCache();
});

after(async () => {
  await cache.dispose();
  for (const m of Object.values(models)) m.dispose();
});

test('the test models are the shapes they claim: GQA ratios, llama3 bands, Qwen2 biases and tie', () => {
  const { llama41, llama21, qwen2, mistral } = models;
  assert.equal(llama41.folder.arch.heads / llama41.folder.arch.kvHeads, 4);
  assert.equal(llama21.folder.arch.heads / llama21.folder.arch.kvHeads, 2);
  assert.equal(mistral.folder.arch.heads / mistral.folder.arch.kvHeads, 4);
  const c = llama41.folder.config;
  const s = c.rope_scaling!;
  const wavelens = [...refInvFreq({ ...c, rope_scaling: null })].map((f) => (2 * Math.PI) / f);
  const low = s.rope_type === 'llama3' ? s.original_max_position_embeddings / s.low_freq_factor : 0;
  const high = s.rope_type === 'llama3' ? s.original_max_position_embeddings / s.high_freq_factor : 0;
  assert.ok(wavelens.some((w) => w < high) && wavelens.some((w) => w > low) && wavelens.some((w) => w >= high && w <= low));
  assert.ok(qwen2.folder.config.qkv_bias && !qwen2.folder.config.o_bias && qwen2.folder.config.tie_word_embeddings);
  assert.ok(qwen2.folder.weights.blocks[0].qB !== null && qwen2.folder.weights.lmHead === null);
  assert.ok(!llama41.folder.config.tie_word_embeddings && llama41.folder.weights.lmHead !== null);
});

for (const name of ['llama41', 'llama21', 'qwen2', 'mistral'] as const) {
  test(`${name}: prefill logits match the float64 reference within 1e-4 relative, batched and alone`, async () => {
    const m = models[name];
    await assertPrefillMatches(m, prompts.get(m)!, (p) => llamaReferenceLogits(llamaRefOf(m), p), name);
  });

  test(`${name}: decode steps over the KV cache match a full recompute at every step`, async () => {
    const m = models[name];
    const ps = prompts.get(m)!.slice(0, 3);
    const feed = ps.map((_, r) => randomIds(6, 40 + r, 0, 50000));
    const got = await forwardSteps(m, ps, 16, feed);
    for (let t = 0; t <= 6; t++) {
      ps.forEach((p, r) => {
        const want = llamaReferenceLogits(llamaRefOf(m), [...p, ...feed[r].slice(0, t)]);
        const rel = relativeError(got[t][r], want);
        assert.ok(rel < TOL, `${name}, step ${t}, row ${r}: relative error ${rel.toExponential(2)}`);
      });
    }
  });

  test(`${name}: greedy tokens equal the reference, with and without repetition penalty`, async () => {
    const m = models[name];
    const ps = prompts.get(m)!;
    for (const penalty of [1, 1.3]) {
      const rows = ps.map((p) => ({ promptIds: p, params: params(m, { max_new_tokens: 12, repetition_penalty: penalty }) }));
      const got = await generateRows(m, rows, { policy: policy('16'), cache });
      ps.forEach((p, r) => {
        const want = llamaReferenceGreedy(llamaRefOf(m), p, {
          maxNewTokens: 12,
          repetitionPenalty: penalty,
          stopIds: rows[r].params.stop_ids,
        });
        // Compare up to the first near tie (float32 may break it either way); most rows have none.
        const n = want.gaps.findIndex((g) => g < 1e-5);
        const upTo = n === -1 ? want.tokens.length : n + 1;
        assert.ok(upTo >= 4, `${name} prompt ${r}: near tie at step ${n}, choose another case`);
        assert.deepEqual(got[r].tokenIds.slice(0, upTo), want.tokens.slice(0, upTo), `${name}, prompt ${r}, penalty ${penalty}`);
      });
    }
  });
}

test('the forward depends on what it claims: rope scaling, biases and the untied head each change the logits', async () => {
  const l = models.llama41;
  const p = prompts.get(l)![2];
  const got = (await forwardSteps(l, [p], p.length, []))[0][0];
  const ref = llamaRefOf(l);
  assert.ok(
    relativeError(got, llamaReferenceLogits({ ...ref, config: { ...ref.config, rope_scaling: null } }, p)) > 1e-3,
    'rope_scaling ignored?',
  );
  assert.ok(
    relativeError(got, llamaReferenceLogits({ ...ref, config: { ...ref.config, tie_word_embeddings: true } }, p)) > 0.5,
    'head tied?',
  );
  const q = models.qwen2;
  const qp = prompts.get(q)![2];
  const qgot = (await forwardSteps(q, [qp], qp.length, []))[0][0];
  const qref = llamaRefOf(q);
  const noBias = { ...qref.weights, blocks: qref.weights.blocks.map((b) => ({ ...b, qB: null, kB: null, vB: null })) };
  assert.ok(relativeError(qgot, llamaReferenceLogits({ ...qref, weights: noBias }, qp)) > 1e-3, 'q/k/v biases ignored?');
});

test('padding and batch invariance: a prompt gives the same tokens alone, in a batch, and in a bigger bucket', async () => {
  for (const m of Object.values(models)) {
    const ps = prompts.get(m)!;
    const rows = ps.map((p) => ({ promptIds: p, params: params(m, { max_new_tokens: 8 }) }));
    const batched = await generateRows(m, rows, { policy: policy('16'), cache });
    const bigger = await generateRows(m, rows, { policy: policy('32'), cache, batchSizes: [1, 2, 4] });
    for (const [r, row] of rows.entries()) {
      const alone = await generateRows(m, [row], { policy: policy('16'), cache, batchSizes: [1] });
      assert.deepEqual(batched[r].tokenIds, alone[0].tokenIds, `${m.name} prompt ${r}: batched vs alone`);
      assert.deepEqual(bigger[r].tokenIds, alone[0].tokenIds, `${m.name} prompt ${r}: bucket 32 vs 16`);
    }
  }
});

test('zero retraces after warm-up over mixed batches, and no tensor left behind', async () => {
  const m = models.llama41;
  const own = new VariantCache();
  // Two passes over the same keys (P 16 and 32, greedy and sample, B 1 and 4) with other prompts:
  // the first compiles every variant, the second must neither retrace nor leave a tensor.
  const pass = async (seed: number) => {
    for (let i = 0; i < 8; i++) {
      const n = 1 + ((i * 3) % 4);
      const rows = Array.from({ length: n }, (_, r) => ({
        promptIds: randomIds(i < 4 ? 1 + ((seed + i * 5 + r * 3) % 15) : 17 + ((seed + r) % 15), seed + i * 10 + r, 0, 50000),
        params: params(m, { max_new_tokens: 4, do_sample: i % 2 === 1, seed: seed + i }),
      }));
      await generateRows(m, rows, { policy: policy('16,32'), cache: own, batchSizes: [1, 4] });
    }
  };
  await pass(100);
  const before = retraces();
  const tensorsBefore = tf.memory().numTensors;
  await pass(200);
  assert.equal(retraces() - before, 0, `retraces after warm-up:\n${recentRetraces().join('\n')}`);
  assert.equal(tf.memory().numTensors, tensorsBefore, 'tensors left behind by generate');
  assert.equal(own.stats().compiles, 6, 'P 16/32 x (greedy at B 1 and 4, sample at B 4)');
  await own.dispose();
  assert.ok(tf.memory().numTensors < tensorsBefore, 'variants disposed');
});

test('several EOS ids: either one ends a row, and it is included with finish_reason eos', async () => {
  const m = models.llama21;
  const p = prompts.get(m)![0];
  const free = await generateRows(m, [{ promptIds: p, params: { ...params(m, { max_new_tokens: 8 }), stop_ids: [] } }], { cache });
  const seq = free[0].tokenIds;
  const first = (id: number) => seq.indexOf(id);
  // generation_config.json lists two EOS ids (Llama 3's <|end_of_text|> and <|eot_id|>); a request
  // gets both as its stop ids.
  assert.deepEqual(params(m, { max_new_tokens: 8 }).stop_ids, [50260, 50263]);
  for (const k of [2, 5]) {
    const other = 50262; // <|end_header_id|>: a special token the random model does not produce here
    assert.equal(first(other), -1);
    for (const eos of [
      [seq[k], other],
      [other, seq[k]],
    ]) {
      const got = await generateRows(m, [{ promptIds: p, params: { ...params(m, { max_new_tokens: 8 }), stop_ids: eos } }], { cache });
      assert.deepEqual(got[0].tokenIds, seq.slice(0, first(seq[k]) + 1), `eos ${eos}`);
      assert.equal(got[0].finishReason, 'eos');
    }
  }
});
