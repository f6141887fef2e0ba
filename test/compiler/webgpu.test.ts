/**
 * What only the webgpu backend has, in this process on webgpu: pipelines counted after warm-up
 * (a new shape of a known kernel is a new signature but no new pipeline; a new kernel is both), the
 * KV cache's slot write (equal to the `where` copy, in place), and the binding limit's errors.
 * Skipped with the reason printed when Dawn finds no adapter (no `webgpu` package, no Vulkan loader
 * or driver). CI installs Mesa's lavapipe so that it runs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CompiledVariant, generateRows, initBackend, retraces, tf, VariantCache, type LoadedModel } from '../../src/compiler/index.js';
import { KvCache } from '../../src/compiler/kv-cache.js';
import { ShapeScope, pipelinesAfterWarmup } from '../../src/compiler/shape-tracker.js';
import { checkModelFits, pipelineStats, webgpuAdapter } from '../../src/compiler/webgpu.js';
import { normals, params, policy, randomIds, smallModel } from '../helpers/compiler-fixtures.js';
import { webgpuSkipReason } from '../helpers/webgpu.js';

const skip = await webgpuSkipReason();
if (skip) console.log(`# webgpu tests skipped: ${skip}`);
else await initBackend('webgpu');

let m: LoadedModel;
before(async () => {
  if (!skip) m = await smallModel('webgpu', { vocab: 512, seed: 61 });
});
after(() => m?.dispose());

test('a warmed variant creates no pipeline; a new shape of a known kernel is a signature retrace only, a new kernel also a pipeline', {
  skip,
}, async () => {
  assert.equal(tf.getBackend(), 'webgpu');
  const v = await CompiledVariant.compile(m, { model: m.name, P: 16, N: 8, strategy: 'greedy' }, 2);
  try {
    // The first variant of the process: its warm-up compiled the shaders it uses.
    assert.ok(v.warmupPipelines.count > 0, 'warm-up created no pipeline: the counter is not wired');
    assert.ok(pipelineStats().created >= v.warmupPipelines.count);
    const p0 = pipelinesAfterWarmup();
    const r0 = retraces();
    const rows = [3, 16].map((n, i) => ({ promptIds: randomIds(n, i + 1, 0, 512), params: params(m, { max_new_tokens: 8 }) }));
    await v.run(rows);
    assert.equal(pipelinesAfterWarmup(), p0, 'a warmed variant created pipelines');
    assert.equal(retraces(), r0);
  } finally {
    v.dispose();
  }
  const scope = new ShapeScope();
  const read = async (f: () => tf.Tensor) => {
    const out = tf.tidy(() => scope.run(f));
    await out.data();
    out.dispose();
  };
  await read(() => tf.add(tf.ones([2, 3]), tf.ones([2, 3])));
  scope.endWarmup();
  const p0 = pipelinesAfterWarmup();
  const r0 = retraces();
  await read(() => tf.add(tf.ones([5, 3]), tf.ones([5, 3]))); // sizes are uniforms: same pipeline
  assert.equal(pipelinesAfterWarmup(), p0, 'a new size of a known kernel created a pipeline');
  assert.equal(retraces(), r0 + 1, 'a new signature was not counted');
  await read(() => tf.atan2(tf.ones([2, 3]), tf.ones([2, 3]))); // a kernel nothing here uses
  assert.equal(pipelinesAfterWarmup(), p0 + 1, 'a new kernel after warm-up was not counted as a pipeline');
  assert.equal(retraces(), r0 + 3, 'the new kernel counts as a new signature and a new pipeline');
});

test('the slot write equals the `where` copy, keeps the cache tensors and allocates nothing', { skip }, async () => {
  const [L, R, H, T, D] = [2, 3, 2, 12, 4];
  const make = (writes: string | undefined) => {
    if (writes) process.env.BATCHGEN_CACHE_WRITES = writes;
    try {
      return new KvCache(L, R, H, T, D);
    } finally {
      delete process.env.BATCHGEN_CACHE_WRITES;
    }
  };
  const slot = make(undefined);
  const copy = make('functional');
  assert.equal(slot.writes, 'slot');
  assert.equal(copy.writes, 'functional');
  const tensors = [0, 1].map((i) => ({ ...slot.layer(i) }));
  const before = tf.memory().numTensors;
  for (const s of [0, 5, T - 1, 5]) {
    for (let i = 0; i < L; i++) {
      const k = tf.tensor2d(normals(R * H * D, 10 * s + i, 1), [R, H * D]);
      const v = tf.tensor2d(normals(R * H * D, 10 * s + i + 100, 1), [R, H * D]);
      tf.tidy(() => {
        slot.writeStep(i, s, k, v);
        copy.writeStep(i, s, k, v);
      });
      tf.dispose([k, v]);
    }
  }
  assert.equal(tf.memory().numTensors, before, 'the writes left tensors behind');
  for (let i = 0; i < L; i++) {
    assert.equal(slot.layer(i).k, tensors[i].k, 'a new key tensor');
    assert.equal(slot.layer(i).vt, tensors[i].vt, 'a new value tensor');
    const [a, b, c, d] = await Promise.all([slot.layer(i).k, copy.layer(i).k, slot.layer(i).vt, copy.layer(i).vt].map((t) => t.data()));
    assert.deepEqual(a, b, `layer ${i} keys`);
    assert.deepEqual(c, d, `layer ${i} values`);
    assert.ok(
      a.some((x) => x !== 0),
      'nothing was written',
    );
  }
  // Writing again after a read: the read's value copy must not hide the new write.
  const k = tf.tensor2d(normals(R * H * D, 999, 1), [R, H * D]);
  slot.writeStep(0, 1, k, k);
  const after = await slot.layer(0).k.data();
  const want = await k.data();
  assert.deepEqual(Array.from(after.subarray(1 * D, 2 * D)), Array.from(want.subarray(0, D)));
  k.dispose();
  slot.dispose();
  copy.dispose();
});

test('a KV cache over the adapter binding limit is refused with the sizes named, before anything is allocated', { skip }, () => {
  const limit = webgpuAdapter()!.maxStorageBufferBindingSize;
  const before = tf.memory().numTensors;
  const T = Math.ceil(limit / (4 * 8 * 64)) + 1; // [1, 8, T, 64] floats, just over the limit
  assert.throws(
    () => new KvCache(1, 1, 8, T, 64),
    (e: Error) => {
      assert.match(e.message, new RegExp(`\\[1, 8, ${T}, 64\\] is [\\d.]+ MiB, over this WebGPU adapter's largest storage binding of`));
      return true;
    },
  );
  assert.equal(tf.memory().numTensors, before);
  new KvCache(1, 1, 8, Math.floor(limit / (4 * 8 * 64)), 64).dispose(); // at the limit: accepted
});

test('a model whose largest tensor exceeds the binding limit is refused, naming the model size, the tensor and the limit', { skip }, () => {
  const limit = webgpuAdapter()!.maxStorageBufferBindingSize;
  const E = 768;
  const V = Math.ceil(limit / (4 * E)) + 1;
  assert.throws(
    () =>
      checkModelFits('big', 4 * 3 * V * E, [
        ['wpe', [1024, E]],
        ['wte', [V, E]],
      ]),
    (e: Error) => {
      assert.match(
        e.message,
        /^model big \([\d.]+ MiB of float32 weights on the device\): wte \[\d+, 768\] is [\d.]+ MiB, over .* of [\d.]+ MiB/,
      );
      return true;
    },
  );
  checkModelFits('small', 4 * 3 * 100 * E, [['wte', [100, E]]]); // fits: no error
});

test('seeded sampling on webgpu: the same tokens alone and among 7 neighbours (top-k, top-p, temperature), another seed other tokens', {
  skip,
}, async () => {
  // invariance.test.ts runs only its greedy cases on webgpu (its 50257-token sorts are slow on a
  // software adapter); this is its sampling case on a 512-token vocabulary.
  const cache = new VariantCache();
  try {
    const req = { max_new_tokens: 10, do_sample: true, seed: 42, temperature: 0.8, top_k: 40, top_p: 0.9 };
    const row = { promptIds: randomIds(9, 5, 0, 512), params: params(m, req) };
    const opts = { policy: policy('16'), batchSizes: [1, 8], cache };
    const alone = (await generateRows(m, [row], opts))[0].tokenIds;
    const neighbours = [3, 16, 7, 1, 14, 5, 11].map((n, i) => ({
      promptIds: randomIds(n, 100 + i, 0, 512),
      params: params(m, {
        max_new_tokens: 2 + i,
        do_sample: true,
        seed: 7 + i,
        top_k: [0, 5, 50, 1, 200, 20, 0][i],
        top_p: [0.5, 1, 0.95, 1, 0.7, 0.99, 1][i],
      }),
    }));
    const among = (await generateRows(m, [...neighbours.slice(0, 3), row, ...neighbours.slice(3)], opts))[3].tokenIds;
    assert.equal(alone.length, 10);
    assert.deepEqual(among, alone);
    const other = (await generateRows(m, [{ ...row, params: params(m, { ...req, seed: 43 }) }], opts))[0].tokenIds;
    assert.notDeepEqual(other, alone);
    assert.deepEqual(cache.stats().variants.sort(), [`${m.name}:p16:n16:sample:b1`, `${m.name}:p16:n16:sample:b8`]);
  } finally {
    await cache.dispose();
  }
});
