/**
 * Padding and batch invariance: a prompt gives the same tokens in prompt buckets 16, 32 and 64, alone
 * (B=1) or among 7 neighbours of other lengths and other parameters (B=8), for greedy decoding and
 * for seeded sampling.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateRows, VariantCache, type LoadedModel, type RowRequest } from '../../src/compiler/index.js';
import type { GenerationParams } from '../../src/shared/params.js';
import { params, policy, randomIds, refOf, smallModel, untiedModel } from '../helpers/compiler-fixtures.js';
import { referenceGreedy } from '../helpers/reference-gpt2.js';

const TEXT = 'In a shocking finding, scientists discovered a herd of unicorns';
const NEW = 10;
/** Neighbour prompt lengths per bucket: all fit the bucket, none is the prompt's own length. */
const NEIGHBOURS: Record<number, number[]> = {
  16: [3, 16, 7, 1, 14, 9, 5],
  32: [3, 32, 20, 1, 27, 9, 16],
  64: [64, 3, 40, 1, 33, 50, 17],
};
/** Where the prompt sits among its neighbours, per bucket. */
const SLOT: Record<number, number> = { 16: 0, 32: 3, 64: 7 };

let tied: LoadedModel;
let untied: LoadedModel;
let cache: VariantCache;

before(async () => {
  tied = await smallModel('inv-tied', { seed: 21 });
  untied = await untiedModel('inv-untied', 0.5, { seed: 22 });
  cache = new VariantCache();
});

after(async () => {
  await cache.dispose();
  tied.dispose();
  untied.dispose();
});

/**
 * Runs `req` for the prompt in each bucket, alone and among 7 neighbours whose parameters come from
 * `neighbour(i)`; returns the prompt's tokens per case.
 */
async function acrossBuckets(
  m: LoadedModel,
  prompt: number[],
  req: GenerationParams,
  neighbour: (i: number) => GenerationParams,
): Promise<Map<string, number[]>> {
  assert.ok(prompt.length > 1 && prompt.length <= 16 && !Object.values(NEIGHBOURS).flat().includes(prompt.length));
  const results = new Map<string, number[]>();
  for (const P of [16, 32, 64]) {
    const pol = policy(String(P)); // the only bucket: P for the prompt, and for max_new_tokens
    const row: RowRequest = { promptIds: prompt, params: params(m, req) };
    const alone = await generateRows(m, [row], { policy: pol, batchSizes: [1, 8], cache });
    results.set(`P=${P} B=1`, alone[0].tokenIds);
    const rows: RowRequest[] = NEIGHBOURS[P].map((len, i) => ({
      promptIds: randomIds(len, 1000 * P + i),
      params: params(m, neighbour(i)),
    }));
    rows.splice(SLOT[P], 0, row);
    const batch = await generateRows(m, rows, { policy: pol, batchSizes: [1, 8], cache });
    results.set(`P=${P} B=8`, batch[SLOT[P]].tokenIds);
    assert.equal(batch.length, 8);
  }
  // Each case really ran in its own variant: bucket P (N = P too, the policy's only size), B = 1 or 8.
  const strategy = req.do_sample ? 'sample' : 'greedy';
  const variants = cache.stats().variants;
  for (const P of [16, 32, 64])
    for (const B of [1, 8]) assert.ok(variants.includes(`${m.name}:p${P}:n${P}:${strategy}:b${B}`), `no variant P=${P} B=${B}`);
  return results;
}

function assertAllEqual(results: Map<string, number[]>, want: number[], label: string): void {
  assert.equal(want.length, NEW);
  for (const [where, got] of results) assert.deepEqual(got, want, `${label}: ${where}`);
}

test('greedy: the same tokens in buckets 16, 32, 64, alone or among 7 neighbours (equal to the reference)', async () => {
  for (const m of [tied, untied]) {
    const prompt = await m.folder.tokenizer.encode(TEXT);
    const req: GenerationParams = { max_new_tokens: NEW, repetition_penalty: 2 };
    const results = await acrossBuckets(m, prompt, req, (i) => ({ max_new_tokens: 1 + ((i * 3) % NEW), repetition_penalty: 1 + i / 10 }));
    const want = referenceGreedy(refOf(m), prompt, { maxNewTokens: NEW, repetitionPenalty: 2, stopIds: m.defaults.eos_token_id });
    assert.ok(Math.min(...want.gaps) > 1e-5, 'near tie in the reference: choose another prompt');
    assertAllEqual(results, want.tokens, m.name);
  }
});

test('seeded sampling (top-k, top-p, temperature): the same tokens in every bucket, alone or among neighbours', async () => {
  const m = untied;
  const prompt = await m.folder.tokenizer.encode(TEXT);
  const req: GenerationParams = { max_new_tokens: NEW, do_sample: true, seed: 42, temperature: 0.8, top_k: 40, top_p: 0.9 };
  const results = await acrossBuckets(m, prompt, req, (i) => ({
    max_new_tokens: 2 + i,
    do_sample: true,
    seed: 7 + i,
    temperature: 0.5 + i / 4,
    top_k: [0, 5, 50, 1, 200, 20, 0][i],
    top_p: [0.5, 1, 0.95, 1, 0.7, 0.99, 1][i],
  }));
  const first = results.get('P=16 B=1')!;
  assert.equal(first.length, NEW);
  assertAllEqual(results, first, 'sample');
  // The sample is a sample: another seed gives other tokens.
  const other = await generateRows(m, [{ promptIds: prompt, params: params(m, { ...req, seed: 43 }) }], {
    policy: policy('16'),
    batchSizes: [1],
    cache,
  });
  assert.notDeepEqual(other[0].tokenIds, first);
});

test('seeded top-k sampling gives the same tokens whether its batch takes the top-k-only path or the full sort', async () => {
  const m = untied;
  const prompt = await m.folder.tokenizer.encode(TEXT);
  // Alone, top_p = 1 and a small top_k; among neighbours with top_p < 1 the batch needs the full sort.
  const req: GenerationParams = { max_new_tokens: NEW, do_sample: true, seed: 5, temperature: 1.2, top_k: 20, top_p: 1 };
  const results = await acrossBuckets(m, prompt, req, (i) => ({
    max_new_tokens: NEW,
    do_sample: true,
    seed: 100 + i,
    top_p: 0.8,
    top_k: 0,
  }));
  const first = results.get('P=16 B=1')!;
  assertAllEqual(results, first, 'top-k sample');
});
