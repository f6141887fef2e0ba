/**
 * No tensor leaks: tf.memory().numTensors is back to its baseline after 50 generate calls on warmed
 * variants (greedy, sampling, beam search, early stops), and back to the pre-compile baseline once
 * the variants, their cache and the model are disposed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompiledVariant, generateRows, initBackend, tf, VariantCache, type RowRequest } from '../../src/compiler/index.js';
import type { GenerationParams } from '../../src/shared/params.js';
import { params, policy, randomIds, smallModel } from '../helpers/compiler-fixtures.js';

const V = 2048;

await initBackend();

test('numTensors returns to its baseline after 50 generate calls, and to the pre-compile baseline after dispose', async () => {
  const beforeModel = tf.memory().numTensors;
  const m = await smallModel('leaks', { vocab: V, seed: 61 });
  const withModel = tf.memory().numTensors;
  assert.ok(withModel > beforeModel, 'the model weights are tensors');

  const cache = new VariantCache();
  const opts = { policy: policy('16'), batchSizes: [4], cache };
  const req = (i: number): GenerationParams =>
    [
      { max_new_tokens: 1 + (i % 16) },
      { max_new_tokens: 16, repetition_penalty: 1.3, stop_token_ids: [i % V] },
      { max_new_tokens: 12, do_sample: true, seed: i, top_p: 0.9, temperature: 0.8 },
      { max_new_tokens: 12, do_sample: true, seed: i, top_k: 5 },
      { max_new_tokens: 10, num_beams: 2, early_stopping: true, stop_token_ids: [(7 * i) % V] },
      { max_new_tokens: 16, num_beams: 2, length_penalty: 2, early_stopping: 'never' as const },
    ][i % 6];
  const rows = (i: number, n: number): RowRequest[] =>
    Array.from({ length: n }, (_, j) => ({ promptIds: randomIds(1 + ((i + j) % 16), i * 10 + j, 0, V), params: params(m, req(i)) }));

  // Warm: compile every variant the calls use, and run each once.
  for (let i = 0; i < 6; i++) await generateRows(m, rows(i, 4), opts);
  const baseline = tf.memory().numTensors;
  assert.ok(baseline > withModel, 'compiled variants hold their caches');

  for (let i = 0; i < 50; i++) {
    await generateRows(m, rows(i, 1 + (i % 4)), opts);
    assert.equal(tf.memory().numTensors, baseline, `call ${i} (${JSON.stringify(req(i))}) left tensors behind`);
  }
  assert.equal(cache.stats().compiles, 3, 'one variant each for greedy, sample and beam2 (P 16, N 16, B 4)');

  await cache.dispose();
  assert.equal(tf.memory().numTensors, withModel, 'disposing the cache left tensors behind');
  m.dispose();
  assert.equal(tf.memory().numTensors, beforeModel, 'disposing the model left tensors behind');
});

test('a variant compiled and disposed leaves nothing, even after a refused call', async () => {
  const m = await smallModel('leaks2', { vocab: V, seed: 62 });
  const before = tf.memory().numTensors;
  const v = await CompiledVariant.compile(m, { model: m.name, P: 16, N: 8, strategy: 'beam3' }, 2);
  await assert.rejects(v.run([{ promptIds: randomIds(20, 1, 0, V), params: params(m, { num_beams: 3, max_new_tokens: 8 }) }]));
  const warmed = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) await v.run([{ promptIds: randomIds(9, i, 0, V), params: params(m, { num_beams: 3, max_new_tokens: 8 }) }]);
  assert.equal(tf.memory().numTensors, warmed);
  v.dispose();
  v.dispose(); // safe twice
  assert.equal(tf.memory().numTensors, before);
  m.dispose();
});
