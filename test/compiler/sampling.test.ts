/**
 * Sampling: the processors of src/compiler/logits.ts on hand-made logits against plain-JS versions
 * of Hugging Face's warpers, inverse-CDF draws with chosen uniforms, and end to end: top_k=1 is
 * greedy, a seed repeats, seeds differ, and the device draws what the float64 reference draws with
 * the same uniforms.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, tf } from '../../src/compiler/backend.js';
import { generateRows, VariantCache, type LoadedModel } from '../../src/compiler/index.js';
import * as logits from '../../src/compiler/logits.js';
import { RowRng } from '../../src/compiler/rng.js';
import { normals, params, policy, refOf, untiedModel } from '../helpers/compiler-fixtures.js';
import { hfTopK, hfTopP, referenceSample, softmax } from '../helpers/reference-gpt2.js';

let m: LoadedModel;
let cache: VariantCache;
let prompts: number[][];

before(async () => {
  await initBackend();
  m = await untiedModel('sampling', 0.5, { seed: 41 });
  cache = new VariantCache();
  prompts = await Promise.all(
    [
      'TensorFlow is',
      'The quick brown fox jumps over the lazy dog',
      'Hello',
      'In a shocking finding, scientists discovered a herd of unicorns',
    ].map((t) => m.folder.tokenizer.encode(t)),
  );
});

after(async () => {
  await cache.dispose();
  m.dispose();
});

// ---- processors on hand-made logits ----

/** Per-row parameters as the generate loop uploads them (top_k 0 = off). */
function rowParams(rows: { k: number; p: number; temperature?: number; penalty?: number }[], V: number): logits.RowParamTensors {
  const col = (xs: number[], dtype: 'float32' | 'int32' = 'float32') => tf.tensor2d(xs, [xs.length, 1], dtype) as tf.Tensor2D;
  return {
    penalty: col(rows.map((r) => r.penalty ?? 1)),
    invTemperature: col(rows.map((r) => 1 / (r.temperature ?? 1))),
    topKIndex: col(
      rows.map((r) => (r.k > 0 ? Math.min(r.k, V) : V) - 1),
      'int32',
    ),
    topP: col(rows.map((r) => r.p)),
  };
}

/** Indices a processor kept (not masked to -inf or to a huge negative value). */
function keptSet(row: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < row.length; i++) if (row[i] > -1e20) out.push(i);
  return out;
}

async function rowsOf(t: tf.Tensor2D): Promise<Float32Array[]> {
  const [R, V] = t.shape;
  const d = (await t.data()) as Float32Array;
  return Array.from({ length: R }, (_, r) => d.slice(r * V, (r + 1) * V));
}

test('topKTopP keeps, per row, exactly what HF TopK then TopP keep (different k and p in one batch)', async () => {
  const V = 300;
  const cases = [
    { k: 0, p: 1 },
    { k: 1, p: 0.5 },
    { k: 5, p: 0.9 },
    { k: 50, p: 0.3 },
    { k: 300, p: 0.99 },
    { k: 0, p: 0.75 },
    { k: 2000, p: 0.6 },
    { k: 17, p: 1 },
  ];
  const R = cases.length;
  const raw = normals(R * V, 5, 2);
  const before = tf.memory().numTensors;
  const p = rowParams(cases, V);
  const s = tf.tensor2d(raw, [R, V]);
  const out = tf.tidy(() => logits.topKTopP(p)(s));
  const got = await rowsOf(out);
  cases.forEach((c, r) => {
    const row = Float64Array.from(raw.subarray(r * V, (r + 1) * V));
    const want = hfTopP(hfTopK(row, c.k), c.p);
    assert.deepEqual(keptSet(got[r]), keptSet(want), `row ${r} (top_k ${c.k}, top_p ${c.p})`);
    for (const i of keptSet(want)) assert.equal(got[r][i], Math.fround(row[i]), `row ${r}: kept scores are unchanged`);
  });
  tf.dispose([out, s, ...Object.values(p)]);
  assert.equal(tf.memory().numTensors, before);
});

test('topKOnly (the top-k fast path) keeps what HF TopK keeps, with top_k 0 meaning off', async () => {
  const V = 500;
  const ks = [1, 2, 10, 64, 0, 33];
  const R = ks.length;
  const raw = normals(R * V, 6, 1);
  const p = rowParams(
    ks.map((k) => ({ k, p: 1 })),
    V,
  );
  const off = tf.tensor2d(
    ks.map((k) => (k === 0 ? 1 : 0)),
    [R, 1],
  ) as tf.Tensor2D;
  const s = tf.tensor2d(raw, [R, V]);
  const out = tf.tidy(() => logits.topKOnly(p, off)(s));
  const got = await rowsOf(out);
  ks.forEach((k, r) => {
    const want = hfTopK(Float64Array.from(raw.subarray(r * V, (r + 1) * V)), k);
    assert.deepEqual(keptSet(got[r]), keptSet(want), `row ${r} (top_k ${k})`);
  });
  tf.dispose([out, s, off, ...Object.values(p)]);
});

test('top_p restricts sampling to the nucleus of a distribution we choose', async () => {
  // probabilities 0.5, 0.3, 0.1, 0.06, 0.04 (ascending cumulative: 0.04, 0.10, 0.20, 0.50, 1)
  const probs = [0.5, 0.3, 0.1, 0.06, 0.04];
  const V = probs.length;
  const nuclei: [number, number[]][] = [
    [0.75, [0, 1]], // removes cumulative ≤ 0.25: 0.04, 0.10, 0.20
    [0.85, [0, 1, 2]], // removes ≤ 0.15: 0.04, 0.10
    [0.4, [0]], // removes ≤ 0.6: all but the best
    [1, [0, 1, 2, 3, 4]],
    [0.97, [0, 1, 2, 3, 4]], // removes ≤ 0.03: nothing (the smallest is 0.04)
  ];
  const R = nuclei.length;
  const raw = new Float32Array(R * V);
  for (let r = 0; r < R; r++) probs.forEach((q, i) => (raw[r * V + i] = Math.log(q) + r)); // a per-row shift changes nothing
  const p = rowParams(
    nuclei.map(([tp]) => ({ k: 0, p: tp })),
    V,
  );
  const s = tf.tensor2d(raw, [R, V]);
  const filtered = tf.tidy(() => logits.topKTopP(p)(s));
  const got = await rowsOf(filtered);
  nuclei.forEach(([tp, keep], r) => {
    assert.deepEqual(keptSet(got[r]), keep, `top_p ${tp}`);
    assert.deepEqual(keptSet(hfTopP(Float64Array.from(raw.subarray(r * V, (r + 1) * V)), tp)), keep, `reference, top_p ${tp}`);
  });
  // Draw with uniforms over [0, 1): only nucleus tokens come out, in proportion to their renormalised mass.
  const U = 200;
  for (let r = 0; r < R; r++) {
    const counts = new Array<number>(V).fill(0);
    const us = Array.from({ length: U }, (_, i) => (i + 0.5) / U);
    const rowScores = tf.tensor2d(Array.from({ length: U }, () => Array.from(got[r])));
    const picked = tf.tidy(() => logits.sampleRows(rowScores as tf.Tensor2D, tf.tensor2d(us, [U, 1]) as tf.Tensor2D));
    for (const x of await picked.data()) counts[x]++;
    tf.dispose([picked, rowScores]);
    const keep = nuclei[r][1];
    const mass = keep.reduce((a, i) => a + probs[i], 0);
    counts.forEach((n, i) => {
      if (!keep.includes(i)) assert.equal(n, 0, `top_p ${nuclei[r][0]}: token ${i} outside the nucleus was drawn`);
      else
        assert.ok(
          Math.abs(n / U - probs[i] / mass) <= 1 / U + 1e-9,
          `top_p ${nuclei[r][0]}: token ${i} drawn ${n}/${U}, expected ${probs[i] / mass}`,
        );
    });
  }
  tf.dispose([filtered, s, ...Object.values(p)]);
});

test('sampleRows is the inverse CDF: chosen uniforms give the expected tokens', async () => {
  const probs = [0.1, 0.2, 0.3, 0.4];
  const cases: [number, number][] = [
    [0.05, 0],
    [0.0999, 0],
    [0.1001, 1],
    [0.25, 1],
    [0.35, 2],
    [0.5999, 2],
    [0.6001, 3],
    [0.999999, 3],
  ];
  const s = tf.tensor2d(cases.map(() => probs.map(Math.log)));
  const u = tf.tensor2d(cases.map(([x]) => [x]));
  const picked = tf.tidy(() => logits.sampleRows(s as tf.Tensor2D, u as tf.Tensor2D));
  assert.deepEqual(
    Array.from(await picked.data()),
    cases.map(([, want]) => want),
  );
  tf.dispose([s, u, picked]);
});

test('sampleRows never draws a token of probability zero, even with a uniform of exactly 0', async () => {
  // RowRng can return exactly 0 (one draw in 2^32); masked tokens must still never come out.
  const M = logits.MASKED;
  const s = tf.tensor2d([
    [M, Math.log(0.5), M, Math.log(0.5)],
    [M, M, M, 0],
    [M, Math.log(0.5), M, Math.log(0.5)],
  ]);
  const u = tf.tensor2d([[0], [0], [0.999999]]);
  const picked = tf.tidy(() => logits.sampleRows(s as tf.Tensor2D, u as tf.Tensor2D));
  assert.deepEqual(Array.from(await picked.data()), [1, 3, 3]);
  tf.dispose([s, u, picked]);
});

test('temperature divides the scores per row', async () => {
  const p = rowParams(
    [
      { k: 0, p: 1, temperature: 0.5 },
      { k: 0, p: 1, temperature: 2 },
    ],
    3,
  );
  const s = tf.tensor2d([
    [1, -2, 4],
    [1, -2, 4],
  ]);
  const out = tf.tidy(() => logits.temperature(p.invTemperature)(s as tf.Tensor2D));
  assert.deepEqual(Array.from(await out.data()), [2, -4, 8, 0.5, -1, 2]);
  tf.dispose([out, s, ...Object.values(p)]);
});

// ---- end to end ----

test('top_k=1 sampling equals greedy, whatever the seed and temperature', async () => {
  for (const penalty of [1, 1.3]) {
    const greedy = await generateRows(
      m,
      prompts.map((p) => ({ promptIds: p, params: params(m, { max_new_tokens: 12, repetition_penalty: penalty }) })),
      { policy: policy('16'), cache },
    );
    const sampled = await generateRows(
      m,
      prompts.map((p, i) => ({
        promptIds: p,
        params: params(m, {
          max_new_tokens: 12,
          repetition_penalty: penalty,
          do_sample: true,
          top_k: 1,
          seed: 1000 + i,
          temperature: [0.3, 1, 1.7, 5][i],
        }),
      })),
      { policy: policy('16'), cache },
    );
    prompts.forEach((_, i) => assert.deepEqual(sampled[i].tokenIds, greedy[i].tokenIds, `prompt ${i}, repetition_penalty ${penalty}`));
  }
});

test('the same seed repeats (any batch position), different seeds differ', async () => {
  const req = { max_new_tokens: 12, do_sample: true, temperature: 1.5, top_k: 0 };
  const p = prompts[0];
  const seeds = [1, 2, 3, 4, 5, 6, 7, 8];
  const first = await generateRows(
    m,
    seeds.map((seed) => ({ promptIds: p, params: params(m, { ...req, seed }) })),
    { policy: policy('16'), cache },
  );
  const again = await generateRows(
    m,
    [...seeds].reverse().map((seed) => ({ promptIds: p, params: params(m, { ...req, seed }) })),
    { policy: policy('16'), cache },
  );
  seeds.forEach((seed, i) => assert.deepEqual(again[seeds.length - 1 - i].tokenIds, first[i].tokenIds, `seed ${seed}`));
  const distinct = new Set(first.map((r) => r.tokenIds.join(',')));
  assert.equal(distinct.size, seeds.length, 'different seeds gave the same tokens');
  for (const r of first) assert.equal(r.tokenIds.length, 12);
});

test('device sampling draws what the float64 reference draws with the same uniforms (HF processor order)', async () => {
  const configs = [
    { temperature: 1, top_k: 50, top_p: 1 },
    { temperature: 0.7, top_k: 40, top_p: 0.9 },
    { temperature: 1.5, top_k: 0, top_p: 0.8 },
    { temperature: 1.3, top_k: 10, top_p: 1, repetition_penalty: 1.2 },
  ];
  for (const c of configs) {
    const rows = prompts.map((p, i) => ({ promptIds: p, params: params(m, { max_new_tokens: 10, do_sample: true, seed: 100 + i, ...c }) }));
    const got = await generateRows(m, rows, { policy: policy('16'), cache });
    prompts.forEach((p, i) => {
      const rng = new RowRng(100 + i);
      const want = referenceSample(refOf(m), p, {
        maxNewTokens: 10,
        temperature: c.temperature,
        topK: c.top_k,
        topP: c.top_p,
        repetitionPenalty: c.repetition_penalty ?? 1,
        stopIds: rows[i].params.stop_ids,
        uniform: () => rng.next(),
      });
      // A uniform within float32 rounding of a CDF boundary would make the case meaningless.
      assert.ok(Math.min(...want.margins) > 1e-6, `${JSON.stringify(c)} prompt ${i}: uniform on a boundary, choose another seed`);
      assert.deepEqual(got[i].tokenIds, want.tokens, `${JSON.stringify(c)} prompt ${i}`);
    });
  }
});

test('softmax helper sanity: reference warpers keep at least one token', () => {
  const x = Float64Array.from([3, 1, 0.5]);
  assert.deepEqual(keptSet(hfTopP(x, 0.01)), [0]);
  assert.deepEqual(keptSet(hfTopK(x, 2)), [0, 1]);
  assert.ok(Math.abs(softmax(x).reduce((a, b) => a + b, 0) - 1) < 1e-12);
});
