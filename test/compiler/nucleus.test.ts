// The nucleus path (top-k/top-p from the best NUCLEUS_CANDIDATES scores) must keep exactly what the
// full sort keeps whenever it says a row fits, and must say "does not fit" when the kept set reaches
// past the candidates, so that the caller falls back to the sort.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { initBackend, tf } from '../../src/compiler/backend.js';
import { MASKED, NUCLEUS_CANDIDATES, topKTopP, topKTopPCandidates, type RowParamTensors } from '../../src/compiler/logits.js';

const V = 3000; // more than NUCLEUS_CANDIDATES

before(async () => {
  await initBackend('wasm');
});

/** Seeded scores: row r is a distribution of "sharpness" scale[r]. */
function scores(scale: number[]): tf.Tensor2D {
  let state = 12345;
  const rand = () => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
  const data = new Float32Array(scale.length * V);
  scale.forEach((sc, r) => {
    for (let i = 0; i < V; i++) data[r * V + i] = sc * (rand() * 2 - 1);
  });
  return tf.tensor2d(data, [scale.length, V]);
}

function params(rows: { k: number; p: number }[]): { p: RowParamTensors; off: tf.Tensor2D } {
  const R = rows.length;
  return {
    p: {
      penalty: tf.ones([R, 1]),
      invTemperature: tf.ones([R, 1]),
      topKIndex: tf.tensor2d(
        rows.map((r) => (r.k > 0 ? Math.min(r.k, V) : V) - 1),
        [R, 1],
        'int32',
      ),
      topP: tf.tensor2d(
        rows.map((r) => r.p),
        [R, 1],
      ),
    },
    off: tf.tensor2d(
      rows.map((r) => (r.k === 0 ? 1 : 0)),
      [R, 1],
    ),
  };
}

async function kept(t: tf.Tensor2D): Promise<number[][]> {
  const a = await t.array();
  return a.map((row) => row.flatMap((x, i) => (x > MASKED / 2 ? [i] : [])));
}

test('rows that fit keep exactly what the full sort keeps', async () => {
  // Sharp rows: their nuclei are a handful of tokens; top_k ≤ candidates always fits.
  const rows = [
    { k: 0, p: 0.9 },
    { k: 50, p: 0.95 },
    { k: 0, p: 0.5 },
    { k: 900, p: 1 },
    { k: 7, p: 0.3 },
  ];
  const s = scores([40, 30, 60, 1, 35]);
  const { p, off } = params(rows);
  const fast = topKTopPCandidates(s, p, off);
  const full = topKTopP(p)(s);
  assert.deepEqual(Array.from(await fast.fits.data()), [1, 1, 1, 1, 1]);
  assert.deepEqual(await kept(fast.filtered), await kept(full));
  const sizes = (await kept(full)).map((k) => k.length);
  assert.ok(sizes[0] > 1 && sizes[0] < NUCLEUS_CANDIDATES, `nucleus size ${sizes[0]}`);
  assert.equal(sizes[3], 900);
});

test('rows whose kept set reaches past the candidates are flagged, never silently cut', async () => {
  const rows = [
    { k: 0, p: 0.9 }, // a flat row: its nucleus is most of the vocabulary
    { k: 2000, p: 1 }, // top_k beyond the candidates
    { k: 0, p: 1 }, // no filter at all
  ];
  const s = scores([1, 1, 1]);
  const { p, off } = params(rows);
  const fast = topKTopPCandidates(s, p, off);
  assert.deepEqual(Array.from(await fast.fits.data()), [0, 0, 0]);
  assert.ok((await kept(topKTopP(p)(s)))[0].length > NUCLEUS_CANDIDATES);
});
