/**
 * The KV cache path equals recomputing the whole sequence at every step: step-by-step logits of
 * prefill + decode steps (written into the static cache) against the float64 reference's full
 * recompute, and long greedy generations against the reference's full-recompute greedy.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateRows, tf, VariantCache, type LoadedModel } from '../../src/compiler/index.js';
import { forwardSteps, type Gpt2Model, params, policy, randomIds, refOf, smallModel, untiedModel } from '../helpers/compiler-fixtures.js';
import { argmax, referenceGreedy, referenceLogits, relativeError } from '../helpers/reference-gpt2.js';

const TOL = 1e-4;

let tied: Gpt2Model;
let untied: LoadedModel;
let cache: VariantCache;

before(async () => {
  tied = await smallModel('kv-tied', { seed: 31 });
  untied = await untiedModel('kv-untied', 0.5, { seed: 32 });
  cache = new VariantCache();
});

after(async () => {
  await cache.dispose();
  tied.dispose();
  untied.dispose();
});

test('logits after every decode step equal a full recompute (3 rows of different lengths, left padded)', async () => {
  for (const m of [tied, untied]) {
    const ref = refOf(m);
    const prompts = [randomIds(5, 1), randomIds(16, 2), randomIds(1, 3)];
    const STEPS = 16;
    // Feed what the reference's greedy picks, so that the sequences are the model's own; its
    // logits at step t are the full recompute over prompt + the first t fed tokens.
    const greedy = prompts.map((p) => referenceGreedy(ref, p, { maxNewTokens: STEPS + 1 }));
    const feed = greedy.map((g) => g.tokens.slice(0, STEPS));
    const got = await forwardSteps(m, prompts, 16, feed);
    assert.equal(got.length, STEPS + 1);
    // spot check that the greedy's logits are the plain forward over the sequence
    assert.deepEqual(greedy[0].logits[3], referenceLogits(ref, [...prompts[0], ...feed[0].slice(0, 3)]));
    let worst = 0;
    for (let t = 0; t <= STEPS; t++) {
      prompts.forEach((_p, r) => {
        const want = greedy[r].logits[t];
        const rel = relativeError(got[t][r], want);
        worst = Math.max(worst, rel);
        assert.ok(rel < TOL, `${m.name}: row ${r} after ${t} decode steps: relative error ${rel.toExponential(2)}`);
        assert.equal(argmax(got[t][r]), argmax(want));
      });
    }
    assert.ok(worst > 0, 'float32 and float64 agree exactly: the comparison is not looking at the device');
  }
});

test('the cache does not leak between rows: a row gives the same logits whatever its neighbours feed', async () => {
  const m = untied;
  const p = randomIds(7, 9);
  const feed = referenceGreedy(refOf(m), p, { maxNewTokens: 8 }).tokens;
  const alone = await forwardSteps(m, [p], 16, [feed]);
  const among = await forwardSteps(m, [randomIds(16, 10), p, randomIds(2, 11)], 16, [randomIds(8, 12), feed, randomIds(8, 13)]);
  for (let t = 0; t <= 8; t++) assert.ok(relativeError(among[t][1], alone[t][0]) < 1e-5, `step ${t}`);
});

test('greedy generation through the cache equals the full-recompute greedy, over 40 new tokens', async () => {
  for (const m of [tied, untied]) {
    const prompts = [randomIds(3, 21), randomIds(16, 23)];
    const rows = prompts.map((p) => ({ promptIds: p, params: params(m, { max_new_tokens: 40 }) }));
    const got = await generateRows(m, rows, { policy: policy('16,64'), cache });
    prompts.forEach((p, r) => {
      const want = referenceGreedy(refOf(m), p, { maxNewTokens: 40, stopIds: rows[r].params.stop_ids });
      assert.ok(Math.min(...want.gaps) > 1e-5, `${m.name} row ${r}: near tie in the reference`);
      assert.deepEqual(got[r].tokenIds, want.tokens, `${m.name} row ${r}`);
    });
  }
});

test('the cache is allocated once with fixed shapes and written in place (no growth), and nothing is left behind', async () => {
  const m = tied;
  const c = m.folder.config;
  const before = tf.memory().numTensors;
  const P = 16;
  const steps = 6;
  let first: { k: tf.Tensor; vt: tf.Tensor }[] = [];
  await forwardSteps(m, [randomIds(4, 5), randomIds(9, 6)], P, [randomIds(steps, 7), randomIds(steps, 8)], (kv, step) => {
    const layers = Array.from({ length: c.n_layer }, (_, i) => ({ ...kv.layer(i) }));
    if (step === 0) first = layers;
    layers.forEach((L, i) => {
      assert.deepEqual(L.k.shape, [2, c.n_head, P + steps, c.n_embd / c.n_head], `step ${step} layer ${i} keys`);
      assert.deepEqual(L.vt.shape, [2, c.n_head, c.n_embd / c.n_head, P + steps], `step ${step} layer ${i} values`);
      if (tf.getBackend() !== 'tensorflow') {
        assert.equal(L.k, first[i].k, `step ${step} layer ${i}: a new key tensor (not written in place)`);
        assert.equal(L.vt, first[i].vt, `step ${step} layer ${i}: a new value tensor (not written in place)`);
      }
    });
  });
  assert.equal(tf.memory().numTensors, before, 'tensors left behind by prefill / decode steps');
});
