/**
 * Compiled variants never retrace: after warm-up, a mixed workload of more than 100 requests
 * (prompt lengths within buckets, greedy / sampling / beam, different temperatures, top-k, top-p,
 * seeds, penalties, stop ids, stop strings, min_new_tokens, no_repeat_ngram_size and max_new_tokens
 * within the same new-token bucket) sees no new kernel
 * signature and compiles nothing. Inputs of another shape are refused by the shape guard.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  CompiledVariant,
  generateRows,
  recentRetraces,
  retraces,
  tf,
  VariantCache,
  type LoadedModel,
  type RowRequest,
} from '../../src/compiler/index.js';
import { ShapeScope } from '../../src/compiler/shape-tracker.js';
import { BatchgenError, ShapeMismatchError } from '../../src/shared/errors.js';
import type { GenerationParams, Strategy } from '../../src/shared/params.js';
import type { CompileKey } from '../../src/shared/compile-key.js';
import { params, policy, randomIds, smallModel } from '../helpers/compiler-fixtures.js';

const V = 2048; // a small vocabulary keeps 100+ requests quick; prompts are token ids
let m: LoadedModel;
let cache: VariantCache;

before(async () => {
  m = await smallModel('retrace', { vocab: V, seed: 51 });
  cache = new VariantCache();
});

after(async () => {
  await cache.dispose();
  m.dispose();
});

const key = (P: number, strategy: Strategy, N = 16): CompileKey => ({ model: m.name, P, N, strategy });

/** A deterministic stream of varied requests. */
function* workload(n: number): Generator<RowRequest> {
  let s = 12345;
  const rand = (k: number) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return (s >>> 8) % k;
  };
  for (let i = 0; i < n; i++) {
    const P = [16, 32][rand(2)];
    const len = P === 16 ? 1 + rand(16) : 17 + rand(16);
    const kind = rand(3);
    const req: GenerationParams = {
      max_new_tokens: 1 + rand(16),
      repetition_penalty: [1, 1, 1.2, 2][rand(4)],
      stop_token_ids: rand(2) ? [rand(V)] : [],
      min_new_tokens: [0, 0, 2, 16][rand(4)],
      no_repeat_ngram_size: [0, 0, 2, 3][rand(4)],
    };
    if (kind !== 2 && rand(3) === 0) req.stop_strings = ['e', ' th'];
    if (kind === 1) {
      Object.assign(req, {
        do_sample: true,
        seed: rand(1 << 30),
        temperature: [0.3, 0.7, 1, 1.5][rand(4)],
        top_k: [0, 1, 20, 64, 100, 2048][rand(6)],
        top_p: [1, 1, 0.9, 0.5][rand(4)],
      });
    } else if (kind === 2) {
      Object.assign(req, {
        num_beams: 2,
        length_penalty: [0.5, 1, 2, -1][rand(4)],
        early_stopping: [true, false, 'never' as const][rand(3)],
      });
    }
    yield { promptIds: randomIds(len, 7 * i + 1, 0, V), params: params(m, req) };
  }
}

test('zero retraces and zero compiles over 120 mixed requests after warm-up', async () => {
  const opts = { policy: policy('16,32'), batchSizes: [4], cache };
  for (const P of [16, 32]) for (const s of ['greedy', 'sample', 'beam2'] as const) await cache.get(m, key(P, s), 4);
  const warm = cache.stats();
  assert.equal(warm.compiles, 6);
  const before = retraces();
  assert.equal(before, 0, `retraces during warm-up: ${recentRetraces().join('\n')}`);

  const requests = [...workload(120)];
  const strategies = new Set(requests.map((r) => (r.params.num_beams > 1 ? 'beam' : r.params.do_sample ? 'sample' : 'greedy')));
  assert.equal(strategies.size, 3);
  let done = 0;
  for (let i = 0; i < requests.length; i += 5) {
    const batch = requests.slice(i, i + 5);
    const out = await generateRows(m, batch, opts);
    out.forEach((r, j) => {
      const p = batch[j].params;
      assert.ok(r.tokenIds.length >= 1 && r.tokenIds.length <= p.max_new_tokens, `request ${i + j}: ${r.tokenIds.length} tokens`);
      if (r.finishReason === 'eos') assert.ok(p.stop_ids.includes(r.tokenIds[r.tokenIds.length - 1]));
      else if (r.finishReason === 'stop') assert.ok(p.stop_strings?.length && r.text !== undefined);
      else if (p.num_beams === 1) assert.equal(r.tokenIds.length, p.max_new_tokens);
    });
    done += out.length;
  }
  assert.equal(done, 120);
  assert.equal(retraces() - before, 0, `retraces after warm-up:\n${recentRetraces().join('\n')}`);
  const after = cache.stats();
  assert.equal(after.compiles, warm.compiles, 'the workload compiled new variants');
  assert.ok(after.hits >= 24, `only ${after.hits} cache hits`);
});

test('the shape guard throws ShapeMismatchError on inputs of another shape, and the variant stays usable', async () => {
  const v = await cache.get(m, key(16, 'greedy'), 2);
  const before = retraces();
  const ok = (len: number, req: GenerationParams = {}): RowRequest => ({
    promptIds: randomIds(len, len, 0, V),
    params: params(m, { max_new_tokens: 4, ...req }),
  });
  const refused = async (rows: RowRequest[], what: RegExp, label: string) => {
    await assert.rejects(v.run(rows), (e: unknown) => {
      assert.ok(e instanceof ShapeMismatchError, `${label}: ${String(e)}`);
      assert.equal((e as BatchgenError).code, 'shape_mismatch');
      assert.match((e as Error).message, what);
      return true;
    });
  };
  await refused([ok(3), ok(4), ok(5)], /rows/, 'too many rows');
  await refused([], /rows/, 'no rows');
  await refused([ok(17)], /prompt tokens/, 'prompt longer than the bucket');
  await refused([ok(5), ok(16, { max_new_tokens: 17 })], /max_new_tokens/, 'max_new_tokens over N');
  await refused([ok(5, { do_sample: true, seed: 1 })], /strategy/, 'sampling on a greedy variant');
  await refused([ok(5, { num_beams: 2 })], /strategy/, 'beam search on a greedy variant');
  const beam2 = await cache.get(m, key(16, 'beam2'), 1);
  await assert.rejects(beam2.run([ok(5, { num_beams: 3 })]), ShapeMismatchError, 'beam3 rows on a beam2 variant');
  await assert.rejects(v.run([{ promptIds: [V], params: params(m, {}) }]), BatchgenError, 'a token id outside the vocabulary');
  assert.equal(retraces(), before, 'a refused call ran kernels of new shapes');
  // Still usable, with any row count up to B and any prompt up to P.
  const res = await v.run([ok(16), ok(1)]);
  assert.equal(res.length, 2);
  assert.equal((await v.run([ok(7)])).length, 1);
  assert.equal(retraces(), before);
});

test('the retrace counter does count: a kernel of a new shape after warm-up is one retrace, counted once', () => {
  const scope = new ShapeScope();
  const before = retraces();
  tf.tidy(() => scope.run(() => tf.add(tf.ones([2, 3]), tf.ones([2, 3]))));
  scope.endWarmup();
  tf.tidy(() => scope.run(() => tf.add(tf.ones([2, 3]), tf.ones([2, 3]))));
  assert.equal(retraces(), before, 'a known signature counted');
  tf.tidy(() => scope.run(() => tf.add(tf.ones([4, 3]), tf.ones([4, 3]))));
  assert.equal(retraces(), before + 1);
  tf.tidy(() => scope.run(() => tf.add(tf.ones([4, 3]), tf.ones([4, 3]))));
  assert.equal(retraces(), before + 1, 'the same new signature counted twice');
  tf.tidy(() => tf.add(tf.ones([5, 3]), tf.ones([5, 3]))); // outside any variant: not counted
  assert.equal(retraces(), before + 1);
  assert.ok(recentRetraces().some((s) => s.includes('[4,3]')));
});

test('a variant compiled directly warms up and runs without retracing', async () => {
  const before = retraces();
  const v = await CompiledVariant.compile(m, key(32, 'sample', 8), 3);
  try {
    const rows = [5, 32, 17].map((len, i) => ({
      promptIds: randomIds(len, 100 + i, 0, V),
      params: params(m, { max_new_tokens: 8, do_sample: true, seed: i, top_p: [1, 0.9, 0.5][i], top_k: [0, 10, 100][i] }),
    }));
    assert.equal((await v.run(rows)).length, 3);
    assert.equal((await v.run(rows.slice(0, 1))).length, 1);
    assert.equal(retraces(), before, recentRetraces().join('\n'));
    assert.ok(v.compileMs > 0);
  } finally {
    v.dispose();
  }
});
