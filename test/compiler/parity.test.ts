/**
 * The device forward equals an independent float64 reference: prefill logits within 1e-4 relative
 * (max|a - b| / max|b|), and greedy tokens equal, for a tied model, a model with its own lm_head, and
 * F16 / BF16 folders. Prompts come from the real GPT-2 tokenizer.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { generateRows, makeModel, VariantCache, type LoadedModel } from '../../src/compiler/index.js';
import {
  assertPrefillMatches,
  forwardSteps,
  type Gpt2Model,
  loadGpt2,
  params,
  policy,
  refOf,
  SMALL,
  tempDir,
  untiedModel,
} from '../helpers/compiler-fixtures.js';
import { argmax, referenceGreedy, referenceLogits, relativeError, type RefModel } from '../helpers/reference-gpt2.js';

const TEXTS = [
  'TensorFlow is',
  'The quick brown fox jumps over the lazy dog',
  'Hello',
  'In a shocking finding, scientists discovered a herd of unicorns',
];

let tied: Gpt2Model;
let untied: Gpt2Model;
let f16: Gpt2Model;
let bf16: Gpt2Model;
let cache: VariantCache;
const prompts = new Map<LoadedModel, number[][]>();

before(async () => {
  const root = tempDir();
  const make = async (name: string, dtype: 'F32' | 'F16' | 'BF16') => {
    await makeModel({ ...SMALL, seed: 11, dtype, out: path.join(root, name) });
    return loadGpt2(path.join(root, name), name);
  };
  tied = await make('tied', 'F32');
  f16 = await make('tied16', 'F16');
  bf16 = await make('tiedbf16', 'BF16');
  untied = await untiedModel('untied', 0.5, { seed: 12 });
  for (const m of [tied, untied, f16, bf16]) prompts.set(m, await Promise.all(TEXTS.map((t) => m.folder.tokenizer.encode(t))));
  cache = new VariantCache();
});

after(async () => {
  await cache.dispose();
  for (const m of [tied, untied, f16, bf16]) m.dispose();
});

function assertLogitsMatch(m: LoadedModel, ref: RefModel, label: string): Promise<void> {
  return assertPrefillMatches(m, prompts.get(m)!, (p) => referenceLogits(ref, p), label);
}

async function assertGreedyMatches(m: LoadedModel, label: string, maxNewTokens = 16, penalties = [1, 1.3]): Promise<void> {
  const ps = prompts.get(m)!;
  for (const penalty of penalties) {
    const rows = ps.map((p) => ({ promptIds: p, params: params(m, { max_new_tokens: maxNewTokens, repetition_penalty: penalty }) }));
    const got = await generateRows(m, rows, { policy: policy('16'), cache });
    ps.forEach((p, r) => {
      const want = referenceGreedy(refOf(m), p, { maxNewTokens, repetitionPenalty: penalty, stopIds: rows[r].params.stop_ids });
      // A near tie would make the comparison meaningless under float32: the cases are chosen without.
      assert.ok(Math.min(...want.gaps) > 1e-5, `${label}: prompt ${r} has a near tie, choose another case`);
      assert.deepEqual(got[r].tokenIds, want.tokens, `${label}, prompt ${r}, repetition_penalty ${penalty}`);
      assert.equal(got[r].finishReason, want.finishReason);
    });
  }
}

test('prefill logits match the reference within 1e-4 relative (tied lm_head), batched and alone', async () => {
  await assertLogitsMatch(tied, refOf(tied), 'tied');
});

test('a model with its own lm_head uses it: logits match the reference with lm_head, not with wte', async () => {
  const w = untied.folder.weights;
  assert.ok(w.lmHead !== null, 'lm_head.weight was not loaded');
  assert.notDeepEqual(w.lmHead!.subarray(0, 64), w.wte.subarray(0, 64));
  await assertLogitsMatch(untied, refOf(untied), 'untied');
  // The same model with the head tied to wte gives other logits: the check above can tell them apart.
  const p = prompts.get(untied)![0];
  const asTied = referenceLogits({ config: untied.folder.config, weights: { ...w, lmHead: null } }, p);
  const got = (await forwardSteps(untied, [p], p.length, []))[0][0];
  assert.ok(relativeError(got, asTied) > 0.5, 'device logits look like the tied head');
});

test('first generated token (max_new_tokens 1) is the reference argmax', async () => {
  for (const m of [tied, untied]) {
    const ps = prompts.get(m)!;
    const got = await generateRows(
      m,
      ps.map((p) => ({ promptIds: p, params: params(m, { max_new_tokens: 1 }) })),
      { policy: policy('16'), cache },
    );
    ps.forEach((p, r) => assert.deepEqual(got[r].tokenIds, [argmax(referenceLogits(refOf(m), p))], `${m.name} prompt ${r}`));
  }
});

test('greedy tokens equal the reference (tied model, with and without repetition penalty)', async () => {
  await assertGreedyMatches(tied, 'tied');
});

test('greedy tokens equal the reference (model with lm_head)', async () => {
  await assertGreedyMatches(untied, 'untied');
});

test('greedy stops at a stop id, which is included, with finish_reason eos', async () => {
  const m = untied;
  const ps = prompts.get(m)!;
  const free = ps.map((p) => referenceGreedy(refOf(m), p, { maxNewTokens: 8 }).tokens);
  // Each row stops on the token its free run produces at step 3 (per-row stop ids in one batch).
  const rows = ps.map((p, r) => ({ promptIds: p, params: params(m, { max_new_tokens: 8, stop_token_ids: [free[r][3]] }) }));
  const got = await generateRows(m, rows, { policy: policy('16'), cache });
  ps.forEach((p, r) => {
    const want = referenceGreedy(refOf(m), p, { maxNewTokens: 8, stopIds: rows[r].params.stop_ids });
    assert.equal(want.finishReason, 'eos');
    assert.ok(want.tokens.length <= 4);
    assert.deepEqual(got[r], { tokenIds: want.tokens, finishReason: 'eos' }, `prompt ${r}`);
  });
});

test('F16 and BF16 folders load within their rounding of the F32 weights, and match the reference', async () => {
  const exact = tied.folder.weights;
  for (const [m, bits] of [
    [f16, 11],
    [bf16, 8],
  ] as const) {
    const w = m.folder.weights;
    const pairs: [string, Float32Array, Float32Array][] = [
      ['wte', w.wte, exact.wte],
      ['wpe', w.wpe, exact.wpe],
      ['ln_f.weight', w.lnFg, exact.lnFg],
      ['h.0.attn.c_attn.weight', w.blocks[0].attnW, exact.blocks[0].attnW],
      ['h.1.mlp.c_proj.bias', w.blocks[1].fcProjB, exact.blocks[1].fcProjB],
    ];
    for (const [name, got, want] of pairs) {
      assert.equal(got.length, want.length);
      let same = 0;
      for (let i = 0; i < got.length; i++) {
        // round to nearest: within half an ulp of the narrower format (plus subnormal spacing for F16)
        const bound = Math.abs(want[i]) * 2 ** -bits + (bits === 11 ? 2 ** -24 : 0);
        if (!(Math.abs(got[i] - want[i]) <= bound)) assert.fail(`${m.name} ${name}[${i}]: ${got[i]} vs ${want[i]}`);
        if (got[i] === want[i]) same++;
      }
      assert.ok(same < got.length, `${m.name} ${name}: identical to F32, not rounded at all`);
    }
    await assertLogitsMatch(m, refOf(m), m.name);
    await assertGreedyMatches(m, m.name, 12, [1.3]);
  }
});
