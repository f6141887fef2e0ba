/**
 * Host packing, pure: left padding offsets, positions 0..len-1 from the mask, key mask, decode bias,
 * k rows per item, and the decode slot that each step opens.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NEG, openDecodeSlot, packBatch } from '../../src/compiler/packing.js';

const rowOf = <T extends ArrayLike<number>>(a: T, r: number, width: number) => Array.from(a).slice(r * width, (r + 1) * width);

test('packBatch left pads each prompt into P: ids, positions 0..len-1, key mask and decode bias', () => {
  const P = 4;
  const N = 2;
  const b = packBatch([[7, 8], [1, 2, 3, 4], [9]], P, N, 1, 5);
  assert.equal(b.R, 3);
  assert.equal(b.T, 6);
  assert.deepEqual(Array.from(b.lens), [2, 4, 1]);
  assert.deepEqual(rowOf(b.ids, 0, P), [5, 5, 7, 8]);
  assert.deepEqual(rowOf(b.ids, 1, P), [1, 2, 3, 4]);
  assert.deepEqual(rowOf(b.ids, 2, P), [5, 5, 5, 9]);
  assert.deepEqual(rowOf(b.pos, 0, P), [0, 0, 0, 1]);
  assert.deepEqual(rowOf(b.pos, 1, P), [0, 1, 2, 3]);
  assert.deepEqual(rowOf(b.pos, 2, P), [0, 0, 0, 0]);
  assert.deepEqual(rowOf(b.keyMask, 0, P), [0, 0, 1, 1]);
  assert.deepEqual(rowOf(b.keyMask, 1, P), [1, 1, 1, 1]);
  assert.deepEqual(rowOf(b.keyMask, 2, P), [0, 0, 0, 1]);
  // Decode bias: the prompt slots open, padding and the N decode slots closed.
  assert.deepEqual(rowOf(b.decodeBias, 0, b.T), [NEG, NEG, 0, 0, NEG, NEG]);
  assert.deepEqual(rowOf(b.decodeBias, 1, b.T), [0, 0, 0, 0, NEG, NEG]);
  assert.deepEqual(rowOf(b.decodeBias, 2, b.T), [NEG, NEG, NEG, 0, NEG, NEG]);
  // Every position under the mask counts up from 0: the mask's running sum minus one.
  for (let r = 0; r < b.R; r++) {
    let seen = 0;
    for (let j = 0; j < P; j++) if (b.keyMask[r * P + j] === 1) assert.equal(b.pos[r * P + j], seen++);
    assert.equal(seen, b.lens[r]);
  }
});

test('packBatch gives each item k identical rows, b*k .. b*k+k-1', () => {
  const b = packBatch([[3], [4, 5]], 3, 1, 2, 0);
  assert.equal(b.R, 4);
  assert.deepEqual(Array.from(b.ids), [0, 0, 3, 0, 0, 3, 0, 4, 5, 0, 4, 5]);
  assert.deepEqual(Array.from(b.pos), [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1]);
  assert.deepEqual(Array.from(b.lens), [1, 1, 2, 2]);
});

test('openDecodeSlot opens slot P + t in every row and gives the fed token position len + t', () => {
  const P = 3;
  const b = packBatch(
    [
      [1, 2],
      [3, 4, 5],
    ],
    P,
    2,
    1,
    0,
  );
  assert.deepEqual(Array.from(openDecodeSlot(b, P, 0)), [2, 3]);
  assert.deepEqual(rowOf(b.decodeBias, 0, b.T), [NEG, 0, 0, 0, NEG]);
  assert.deepEqual(Array.from(openDecodeSlot(b, P, 1)), [3, 4]);
  assert.deepEqual(rowOf(b.decodeBias, 0, b.T), [NEG, 0, 0, 0, 0]);
  assert.deepEqual(rowOf(b.decodeBias, 1, b.T), [0, 0, 0, 0, 0]);
});

test('packBatch refuses a prompt longer than the bucket', () => {
  assert.throws(() => packBatch([[1, 2, 3]], 2, 1, 1, 0), RangeError);
});
