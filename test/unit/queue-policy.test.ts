/** Pure tests of the queue system's decisions: micro-batching, queue choice, payload checks, failures, bucket plans. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseQueue, collect, collectStep, planBatches } from '../../src/worker/micro-batcher.js';
import { checkBatchSizes, paddedBatchSize, parseBatchSizes } from '../../src/shared/batch-sizes.js';
import { BAD_JSON_MARK, checkPayload } from '../../src/worker/payload.js';
import { decideFailure, queuedMs, resultRecord } from '../../src/worker/results.js';
import { BatchgenError } from '../../src/shared/errors.js';
import { listPadding, planBuckets, policyPadding } from '../../src/producer/bucket-plan.js';
import { DEFAULT_BUCKET_POLICY } from '../../src/shared/buckets.js';
import { keyFor } from '../../src/producer/prepare.js';
import type { JobPayload } from '../../src/shared/schemas.js';
import type { ResolvedParams } from '../../src/shared/params.js';

test('batch sizes: checked, sorted, and a batch pads to the smallest allowed size', () => {
  assert.deepEqual(parseBatchSizes('8,1,4,2,4'), [1, 2, 4, 8]);
  assert.throws(() => checkBatchSizes([0]), /batch size 0/);
  assert.throws(() => checkBatchSizes([1.5]), /batch size 1.5/);
  assert.throws(() => checkBatchSizes([]), /at least one/);
  const s = [1, 2, 4, 8];
  assert.deepEqual(
    [1, 2, 3, 4, 5, 7, 8].map((n) => paddedBatchSize(n, s)),
    [1, 2, 4, 4, 8, 8, 8],
  );
  assert.throws(() => paddedBatchSize(9, s), /exceed/);
});

test('collect step: take until B_max, wait at most max_wait_ms after the first job', () => {
  const base = { bMax: 8, maxWaitMs: 20 };
  assert.equal(collectStep({ ...base, have: 0, elapsedMs: 0, lastTakeEmpty: false }), 'take');
  assert.equal(collectStep({ ...base, have: 0, elapsedMs: 0, lastTakeEmpty: true }), 'give-up');
  assert.equal(collectStep({ ...base, have: 3, elapsedMs: 5, lastTakeEmpty: false }), 'take');
  assert.equal(collectStep({ ...base, have: 3, elapsedMs: 5, lastTakeEmpty: true }), 'wait');
  assert.equal(collectStep({ ...base, have: 3, elapsedMs: 20, lastTakeEmpty: true }), 'run');
  assert.equal(collectStep({ ...base, have: 8, elapsedMs: 0, lastTakeEmpty: false }), 'run');
});

test('collect: fills a batch from a trickle, never past B_max, gives up on an empty queue', async () => {
  let clock = 0;
  const arrivals = [2, 0, 1, 0, 0, 3, 5];
  let i = 0;
  const source = {
    async take(n: number) {
      clock += 1;
      const k = Math.min(n, arrivals[i++] ?? 0);
      return Array.from({ length: k }, (_, j) => `j${i}-${j}`);
    },
  };
  const got = await collect(source, 4, { maxWaitMs: 1000, pollMs: 0 }, () => clock);
  assert.equal(got.length, 4);
  assert.deepEqual(await collect({ take: async () => [] }, 4, { maxWaitMs: 10, pollMs: 1 }), []);
  // the wait is bounded: a single job runs alone after max_wait_ms
  let calls = 0;
  const t0 = Date.now();
  const one = await collect({ take: async () => (calls++ === 0 ? ['a'] : []) }, 8, { maxWaitMs: 30, pollMs: 5 });
  assert.deepEqual(one, ['a']);
  assert.ok(Date.now() - t0 >= 25 && Date.now() - t0 < 1000);
});

test('planBatches: jobs delivered before run alone; the rest together', () => {
  const items = [
    { id: 'a', d: 1 },
    { id: 'b', d: 2 },
    { id: 'c', d: 1 },
    { id: 'd', d: 3 },
    { id: 'e', d: 1 },
  ];
  const plan = planBatches(items, (x) => x.d, 8).map((g) => g.map((x) => x.id));
  assert.deepEqual(plan, [['a', 'c', 'e'], ['b'], ['d']]);
  assert.deepEqual(
    planBatches([1, 1, 1, 1, 1], () => 1, 2).map((g) => g.length),
    [2, 2, 1],
  );
});

test('chooseQueue: full batches first, then the least recently served; delayed only when idle', () => {
  const q = (id: string, waiting: number, lastServedAt: number, delayed = 0) => ({ id, waiting, delayed, lastServedAt });
  assert.equal(chooseQueue([], 8), null);
  assert.equal(chooseQueue([q('a', 0, 0)], 8), null);
  assert.equal(chooseQueue([q('a', 3, 5), q('b', 9, 10)], 8)!.id, 'b');
  assert.equal(chooseQueue([q('a', 3, 5), q('b', 2, 1)], 8)!.id, 'b');
  assert.equal(chooseQueue([q('a', 20, 50), q('b', 8, 10)], 8)!.id, 'b');
  assert.equal(chooseQueue([q('a', 0, 0, 2)], 8)!.id, 'a');
  assert.equal(chooseQueue([q('a', 0, 0, 2), q('b', 1, 100)], 8)!.id, 'b');
});

const params: ResolvedParams = {
  max_new_tokens: 8,
  do_sample: false,
  temperature: 1,
  top_k: 50,
  top_p: 1,
  repetition_penalty: 1,
  seed: 3,
  num_beams: 1,
  length_penalty: 1,
  early_stopping: false,
  stop_ids: [99],
  pad_token_id: 99,
};
const payload: JobPayload = {
  v: 1,
  batch_id: 'b1',
  custom_id: 'c:1',
  line: 7,
  form: 'native',
  model: 'tiny',
  key: 'tiny:p16:n16:greedy',
  prompt_ids: [1, 2, 3],
  params,
  created_at: 10,
};
const limits = { key: { model: 'tiny', P: 16, N: 16, strategy: 'greedy' as const }, contextLength: 128, vocabSize: 100 };

test('checkPayload: a good payload passes', () => {
  const r = checkPayload('b1/c%3A1', payload, limits);
  assert.ok(r.ok);
});

test('checkPayload: tampered payloads fail with a reason and their ids', () => {
  const cases: [unknown, RegExp][] = [
    [{ [BAD_JSON_MARK]: 'Unexpected token' }, /not JSON/],
    [{ ...payload, model: '../../etc/passwd' }, /model/],
    [{ ...payload, prompt_ids: new Array(20).fill(1) }, /prompt bucket 16/],
    [{ ...payload, prompt_ids: new Array(100000).fill(1) }, /schema/],
    [{ ...payload, model: 'other', key: 'other:p16:n16:greedy' }, /not the model of its queue/],
    [{ ...payload, key: 'tiny:p32:n16:greedy' }, /not the key of its queue/],
    [{ ...payload, prompt_ids: [1, 200] }, /outside the vocabulary/],
    [{ ...payload, params: { ...params, do_sample: true } }, /ask for sample/],
    [{ ...payload, params: { ...params, max_new_tokens: 32 } }, /new-token bucket/],
    [{ ...payload, custom_id: 'other' }, /does not match/],
    ['a string', /schema/],
    [null, /schema/],
  ];
  for (const [data, re] of cases) {
    const r = checkPayload('b1/c%3A1', data, limits);
    assert.ok(!r.ok, JSON.stringify(data).slice(0, 80));
    assert.match(r.reason, re);
    assert.equal(r.batchId, 'b1');
    assert.equal(r.customId, 'c:1');
  }
  const ctx = checkPayload(
    'b1/c%3A1',
    { ...payload, prompt_ids: new Array(16).fill(1), params: { ...params, max_new_tokens: 16 } },
    { ...limits, contextLength: 20 },
  );
  assert.ok(!ctx.ok);
  assert.match(ctx.reason, /context/);
});

test('decideFailure: permanent errors never retry; others until attempts run out', () => {
  assert.deepEqual(decideFailure(new BatchgenError('invalid_payload', 'x'), 0, 3), { code: 'invalid_payload', message: 'x', final: true });
  assert.equal(decideFailure(new BatchgenError('shape_mismatch', 'x'), 0, 3).final, true);
  assert.equal(decideFailure(new Error('boom'), 0, 3).final, false);
  assert.equal(decideFailure(new Error('boom'), 1, 3).final, false);
  assert.equal(decideFailure(new Error('boom'), 2, 3).final, true);
  assert.equal(decideFailure(new Error('boom'), 0, 1).final, true);
  assert.equal(decideFailure(new Error('boom'), 0, 3).code, 'generation_failed');
});

test('resultRecord: OpenAI text leaves out a final stop id; native keeps every id', async () => {
  const decode = async (ids: number[]) => ids.map((i) => `<${i}>`).join('');
  const row = { tokenIds: [5, 6, 99], finishReason: 'eos' as const };
  const n = await resultRecord(payload, row, decode, { worker: 'w', deliveries: 1 });
  assert.equal(n.text, '<5><6><99>');
  assert.deepEqual(n.token_ids, [5, 6, 99]);
  assert.equal(n.completion_tokens, 3);
  assert.equal(n.prompt_tokens, 3);
  const o = await resultRecord({ ...payload, form: 'openai' }, row, decode, { worker: 'w', deliveries: 2 });
  assert.equal(o.text, '<5><6>');
  assert.equal(o.deliveries, 2);
  const l = await resultRecord({ ...payload, form: 'openai' }, { tokenIds: [5, 99], finishReason: 'length' }, decode, {
    worker: 'w',
    deliveries: 1,
  });
  assert.equal(l.text, '<5><99>');
});

test('resultRecord: queued_ms is stored when the batch start is known, and never negative', async () => {
  const decode = async (ids: number[]) => ids.join(',');
  const row = { tokenIds: [5], finishReason: 'length' as const };
  assert.equal(queuedMs(1_000, 1_250), 250);
  assert.equal(queuedMs(1_000, 990), 0, 'a clock step back gives 0, not a negative wait');
  const r = await resultRecord(payload, row, decode, { worker: 'w', deliveries: 1, queuedMs: queuedMs(1_000, 1_250) });
  assert.equal(r.queued_ms, 250);
  const none = await resultRecord(payload, row, decode, { worker: 'w', deliveries: 1 });
  assert.ok(!('queued_ms' in none), 'no field without a batch start');
});

function bruteForce(lengths: number[], k: number): number {
  const v = [...new Set(lengths)].sort((a, b) => a - b);
  let best = Infinity;
  const max = v[v.length - 1];
  const rest = v.slice(0, -1);
  const rec = (start: number, chosen: number[]) => {
    const p = listPadding(lengths, [...chosen, max]).padded;
    if (p < best) best = p;
    if (chosen.length + 1 >= k) return;
    for (let i = start; i < rest.length; i++) rec(i + 1, [...chosen, rest[i]]);
  };
  rec(0, []);
  return best;
}

test('planBuckets: optimal against brute force, at most K buckets, last is the longest prompt', () => {
  let seed = 7;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  for (let trial = 0; trial < 30; trial++) {
    const n = 1 + Math.floor(rnd() * 25);
    const lengths = Array.from({ length: n }, () => 1 + Math.floor(rnd() ** 2 * 60));
    for (const k of [1, 2, 3, 4]) {
      const plan = planBuckets(lengths, k);
      assert.ok(plan.buckets.length <= k);
      assert.equal(plan.buckets[plan.buckets.length - 1], Math.max(...lengths));
      assert.equal(plan.padded, bruteForce(lengths, k), `lengths ${lengths} k ${k}`);
      assert.deepEqual(
        plan.buckets,
        [...plan.buckets].sort((a, b) => a - b),
      );
    }
  }
  assert.deepEqual(planBuckets([5, 5, 5], 3).buckets, [5]);
  assert.equal(planBuckets([5, 5, 5], 3).waste, 0);
  assert.deepEqual(planBuckets([], 2).buckets, []);
  assert.throws(() => planBuckets([1], 0), /max buckets/);
});

test('padding waste: a skewed mix wastes less with a plan than with powers of two', () => {
  const lengths = [...new Array(90).fill(0).map((_, i) => 3 + (i % 8)), ...new Array(10).fill(0).map((_, i) => 70 + i)];
  const pow2 = policyPadding(lengths, DEFAULT_BUCKET_POLICY, 1024);
  const plan = planBuckets(lengths, 4);
  assert.ok(plan.waste < pow2.waste, `${plan.waste} < ${pow2.waste}`);
  assert.equal(pow2.real, plan.real);
});

test('keyFor: separate prompt and new-token policies', () => {
  const k = keyFor('m', 20, params, 128, { prompt: { kind: 'list', sizes: [24, 48] }, newTokens: DEFAULT_BUCKET_POLICY });
  assert.deepEqual(k, { model: 'm', P: 24, N: 16, strategy: 'greedy' });
  assert.throws(() => keyFor('m', 100, params, 128, { prompt: { kind: 'list', sizes: [24, 48] } }), /bucket/);
  assert.throws(() => keyFor('m', 125, params, 128, { prompt: DEFAULT_BUCKET_POLICY }), /exceeds the model's context/);
});
