/**
 * The variant cache: counts compiles, hits and evictions; a memory budget evicts the least recently
 * used variant first (never the one just compiled), and an evicted variant is freed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, tf, VariantCache, type CompiledVariant, type LoadedModel } from '../../src/compiler/index.js';
import type { CompileKey } from '../../src/shared/compile-key.js';
import type { Strategy } from '../../src/shared/params.js';
import { params, randomIds, smallModel } from '../helpers/compiler-fixtures.js';

const V = 2048;
let m: LoadedModel;
const key = (P: number, strategy: Strategy): CompileKey => ({ model: m.name, P, N: 16, strategy });
let A: CompileKey; // greedy, P 16
let B: CompileKey; // sample, P 16: the same size as A
let C: CompileKey; // greedy, P 32: bigger

before(async () => {
  await initBackend();
  m = await smallModel('cache', { vocab: V, seed: 71 });
  A = key(16, 'greedy');
  B = key(16, 'sample');
  C = key(32, 'greedy');
});

after(() => m.dispose());

async function runs(v: CompiledVariant): Promise<boolean> {
  const req = v.key.strategy === 'sample' ? { do_sample: true, seed: 1 } : {};
  try {
    await v.run([{ promptIds: randomIds(5, 1, 0, V), params: params(m, { max_new_tokens: 2, ...req }) }]);
    return true;
  } catch (e) {
    assert.match((e as Error).message, /disposed/);
    return false;
  }
}

test('counts compiles and hits; the same key at another batch size is another variant', async () => {
  const seen: string[] = [];
  const cache = new VariantCache({ onCompile: (v) => seen.push(v.id) });
  const a1 = await cache.get(m, A, 1);
  const a2 = await cache.get(m, A, 1);
  assert.equal(a1, a2);
  const a4 = await cache.get(m, A, 4);
  assert.notEqual(a4, a1);
  const [x, y] = await Promise.all([cache.get(m, B, 1), cache.get(m, B, 1)]); // concurrent: compiled once
  assert.equal(x, y);
  const s = cache.stats();
  assert.deepEqual({ compiles: s.compiles, hits: s.hits, evictions: s.evictions }, { compiles: 3, hits: 2, evictions: 0 });
  assert.deepEqual(seen, [a1.id, a4.id, x.id]);
  assert.deepEqual([...s.variants].sort(), [a1.id, a4.id, x.id].sort());
  assert.equal(s.bytes, a1.bytes + a4.bytes + x.bytes);
  assert.ok(a4.bytes > a1.bytes);
  await cache.dispose();
});

test('a small budget evicts the least recently used variant first, and frees it', async () => {
  // Sizes first, from a throwaway cache.
  const probe = new VariantCache();
  const sizeA = (await probe.get(m, A, 1)).bytes;
  const sizeB = (await probe.get(m, B, 1)).bytes;
  const sizeC = (await probe.get(m, C, 1)).bytes;
  await probe.dispose();
  assert.equal(sizeA, sizeB);
  assert.ok(sizeC > sizeA);

  const tensorsBefore = tf.memory().numTensors;
  const cache = new VariantCache({ budgetBytes: sizeA + sizeC }); // room for A + B, or A + C, not all three
  const a = await cache.get(m, A, 1);
  const b = await cache.get(m, B, 1);
  assert.equal(cache.stats().evictions, 0);
  await cache.get(m, A, 1); // A is now the most recently used; B the least
  const c = await cache.get(m, C, 1);
  let s = cache.stats();
  assert.equal(s.evictions, 1);
  assert.deepEqual([...s.variants].sort(), [a.id, c.id].sort(), 'B (least recently used) should have gone');
  assert.ok(s.bytes <= sizeA + sizeC);
  assert.equal(await runs(b), false, 'an evicted variant is disposed');
  assert.equal(await runs(a), true);
  assert.equal(await runs(c), true);

  // Order now: A (hit before C was compiled), C. B again: A is the least recently used.
  const b2 = await cache.get(m, B, 1);
  assert.notEqual(b2, b);
  s = cache.stats();
  assert.deepEqual({ compiles: s.compiles, hits: s.hits, evictions: s.evictions }, { compiles: 4, hits: 1, evictions: 2 });
  assert.deepEqual([...s.variants].sort(), [c.id, b2.id].sort());
  assert.equal(await runs(a), false);
  assert.equal(await runs(b2), true);

  await cache.dispose();
  assert.equal(await runs(c), false, 'dispose frees every variant');
  assert.equal(tf.memory().numTensors, tensorsBefore, 'evicted or disposed variants left tensors behind');
});

test('the variant just compiled is kept even when it alone is over the budget', async () => {
  const cache = new VariantCache({ budgetBytes: 1 });
  const a = await cache.get(m, A, 1);
  assert.deepEqual(cache.stats().variants, [a.id]);
  assert.equal(await runs(a), true);
  const b = await cache.get(m, B, 1);
  const s = cache.stats();
  assert.deepEqual(s.variants, [b.id]);
  assert.equal(s.evictions, 1);
  await cache.dispose();
});

test('a budget that is not positive is refused', () => {
  assert.throws(() => new VariantCache({ budgetBytes: 0 }), /budget/i);
  assert.throws(() => new VariantCache({ budgetBytes: -5 }), /budget/i);
  assert.throws(() => new VariantCache({ budgetBytes: Number.NaN }), /budget/i);
});

test('release disposes one variant of a key given up and gives its bytes back; the key compiles again on the next get', async () => {
  const tensorsBefore = tf.memory().numTensors;
  const cache = new VariantCache();
  const a = await cache.get(m, A, 1);
  const c = await cache.get(m, C, 1);
  assert.equal(await cache.release(A, 1), true);
  assert.equal(await cache.release(A, 1), false, 'not cached any more');
  const s = cache.stats();
  assert.deepEqual([s.variants, s.bytes, s.evictions], [[c.id], c.bytes, 0]);
  assert.equal(await runs(a), false, 'a released variant is disposed');
  assert.equal(await runs(c), true);
  const a2 = await cache.get(m, A, 1);
  assert.notEqual(a2, a);
  assert.equal(cache.stats().compiles, 3);
  await cache.dispose();
  assert.equal(tf.memory().numTensors, tensorsBefore, 'released variants left tensors behind');
});
