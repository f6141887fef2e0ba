/**
 * Beam search end to end against a naive float64 beam search (exhaustive expansion over the whole
 * vocabulary, Hugging Face's BeamHypotheses scoring): num_beams 2 and 3, length_penalty 0.5 / 1 / 2,
 * early_stopping true / false / 'never', with stop ids that the model does produce so that
 * hypotheses finish early. num_beams=1 is greedy.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { generateRows, VariantCache, type LoadedModel } from '../../src/compiler/index.js';
import { params, policy, refOf, untiedModel } from '../helpers/compiler-fixtures.js';
import {
  referenceBeamSearch,
  referenceGreedy,
  referenceLogits,
  type RefBeamOptions,
  type RefBeamResult,
} from '../helpers/reference-gpt2.js';

const TEXTS = [
  'TensorFlow is',
  'The quick brown fox jumps over the lazy dog',
  'Hello',
  'In a shocking finding, scientists discovered a herd of unicorns',
];
const NEW = 10;

let m: LoadedModel;
let cache: VariantCache;
let prompts: number[][];
let greedy: number[][];

before(async () => {
  m = await untiedModel('beam', 0.5, { seed: 12 });
  cache = new VariantCache();
  prompts = await Promise.all(TEXTS.map((t) => m.folder.tokenizer.encode(t)));
  greedy = prompts.map((p) => referenceGreedy(refOf(m), p, { maxNewTokens: NEW }).tokens);
});

after(async () => {
  await cache.dispose();
  m.dispose();
});

interface Case {
  k: number;
  lp: number;
  es: boolean | 'never';
  /** Each prompt's stop id is its greedy token at this step (-1: EOS only). */
  stopAt: number;
  penalty?: number;
}

/** Runs a case on the device (all prompts in one batch) and in the reference; asserts they agree. */
async function check(c: Case): Promise<RefBeamResult[]> {
  const rows = prompts.map((p, i) => ({
    promptIds: p,
    params: params(m, {
      max_new_tokens: NEW,
      num_beams: c.k,
      length_penalty: c.lp,
      early_stopping: c.es,
      repetition_penalty: c.penalty ?? 1,
      stop_token_ids: c.stopAt >= 0 ? [greedy[i][c.stopAt]] : [],
    }),
  }));
  const got = await generateRows(m, rows, { policy: policy('16'), cache });
  return prompts.map((p, i) => {
    const o: RefBeamOptions = {
      numBeams: c.k,
      maxNewTokens: NEW,
      lengthPenalty: c.lp,
      earlyStopping: c.es,
      stopIds: rows[i].params.stop_ids,
      repetitionPenalty: c.penalty ?? 1,
    };
    const want = referenceBeamSearch(refOf(m), p, o);
    const label = `${JSON.stringify(c)} prompt ${i}`;
    // float32 on the device: the cases are chosen without near ties among the kept candidates.
    assert.ok(want.minCandidateGap > 1e-5, `${label}: near tie (${want.minCandidateGap}), choose another case`);
    assert.deepEqual(got[i].tokenIds, want.tokens, `${label}: tokens (reference score ${want.score})`);
    assert.equal(got[i].finishReason, want.finishReason, `${label}: finish reason`);
    return want;
  });
}

test('num_beams=1 is greedy', async () => {
  const rows = (extra: object) => prompts.map((p) => ({ promptIds: p, params: params(m, { max_new_tokens: NEW, ...extra }) }));
  const one = await generateRows(m, rows({ num_beams: 1, length_penalty: 2, early_stopping: true }), { policy: policy('16'), cache });
  const plain = await generateRows(m, rows({}), { policy: policy('16'), cache });
  prompts.forEach((_, i) => {
    assert.deepEqual(one[i].tokenIds, plain[i].tokenIds);
    assert.deepEqual(one[i].tokenIds, greedy[i]);
  });
});

test('num_beams 2 and 3 equal the naive beam search, without an early stop id', async () => {
  for (const k of [2, 3]) for (const lp of [0.5, 2]) await check({ k, lp, es: false, stopAt: -1 });
});

test('num_beams 2 and 3 equal the naive beam search with EOS: every length_penalty and early_stopping', async () => {
  const results: { c: Case; r: RefBeamResult[] }[] = [];
  for (const stopAt of [0, 2]) {
    for (const k of [2, 3]) {
      for (const lp of [0.5, 1, 2]) {
        for (const es of [true, false, 'never'] as const) {
          const c = { k, lp, es, stopAt };
          results.push({ c, r: await check(c) });
        }
      }
    }
  }
  // The grid exercises what it claims to: hypotheses that end on a stop id and ones that run to
  // max_new_tokens, searches that end early, and a length penalty that changes the answer.
  const all = results.flatMap((x) => x.r);
  assert.ok(
    all.some((r) => r.finishReason === 'eos' && r.tokens.length < NEW),
    'no result ends on a stop id',
  );
  assert.ok(
    all.some((r) => r.finishReason === 'length'),
    'no result runs to max_new_tokens',
  );
  assert.ok(
    all.some((r) => r.steps < NEW),
    'no search ended before max_new_tokens',
  );
  const differsFromGreedy = results.some((x) => x.r.some((r, i) => r.tokens.join() !== greedy[i].slice(0, r.tokens.length).join()));
  assert.ok(differsFromGreedy, 'every beam result is a greedy prefix');
  const byLp = (lp: number) =>
    results.filter((x) => x.c.lp === lp && x.c.k === 2 && x.c.es === false && x.c.stopAt === 0)[0].r.map((r) => r.tokens.join());
  assert.notDeepEqual(byLp(0.5), byLp(2), 'length_penalty changes nothing');
});

test('beam search applies the repetition penalty to the log-probs of each beam', async () => {
  for (const k of [2, 3]) await check({ k, lp: 1, es: false, stopAt: 2, penalty: 1.3 });
});

test('where the legacy scorer and the vectorised search stop differently, the device follows the vectorised one', async () => {
  // k=2, length_penalty 2, early_stopping false, stop at the greedy's third token, prompt "Hello":
  // after 3 steps the best running beam can no longer beat the finished ones (vectorised check,
  // transformers ≥ 4.50); the legacy check also counts the EOS candidate and keeps searching.
  const c: Case = { k: 2, lp: 2, es: false, stopAt: 2 };
  const i = 2;
  const o: RefBeamOptions = {
    numBeams: 2,
    maxNewTokens: NEW,
    lengthPenalty: 2,
    earlyStopping: false,
    stopIds: [...m.defaults.eos_token_id, greedy[i][2]],
  };
  const vectorised = referenceBeamSearch(refOf(m), prompts[i], o);
  const legacy = referenceBeamSearch(refOf(m), prompts[i], { ...o, doneCheck: 'candidates' });
  assert.notDeepEqual(vectorised.tokens, legacy.tokens, 'this case no longer separates the two checks');
  const [want] = (await check(c)).slice(i, i + 1);
  assert.deepEqual(want.tokens, vectorised.tokens);
});

test('with 16 stop ids covering the most likely tokens, beams continue past them (max(2, 1 + #stops) * k candidates)', async () => {
  // Hugging Face keeps max(2, 1 + #stop ids) * k candidates per step, so that k beams can go on
  // even when the best candidates all end on a stop id. Here the 16 most likely first tokens (plus
  // EOS: 17 stop ids) are stop ids; with early_stopping 'never' and length_penalty 2 the search must
  // go on with the best other tokens and find a longer, better hypothesis.
  const i = 2;
  const logits = referenceLogits(refOf(m), prompts[i]);
  const top16 = Array.from(logits.keys())
    .sort((a, b) => logits[b] - logits[a])
    .slice(0, 16);
  const req = { max_new_tokens: 6, num_beams: 2, length_penalty: 2, early_stopping: 'never' as const, stop_token_ids: top16 };
  const rowParams = params(m, req);
  assert.equal(rowParams.stop_ids.length, 17);
  const want = referenceBeamSearch(refOf(m), prompts[i], {
    numBeams: 2,
    maxNewTokens: 6,
    lengthPenalty: 2,
    earlyStopping: 'never',
    stopIds: rowParams.stop_ids,
  });
  assert.equal(want.finishReason, 'length', 'the reference should find a longer hypothesis');
  assert.ok(want.minCandidateGap > 1e-5);
  const [got] = await generateRows(m, [{ promptIds: prompts[i], params: rowParams }], { policy: policy('16'), cache });
  assert.deepEqual(got, { tokenIds: want.tokens, finishReason: want.finishReason });
});
