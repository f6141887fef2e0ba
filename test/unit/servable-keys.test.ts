// Every request the producer accepts gets a compile key a model can serve (P + N ≤ context), OpenAI
// lines never take Hugging Face's defaults for parameters OpenAI does not have, and plan-buckets
// proposes only servable keys. Pure functions, no Redis.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeModel } from '../../src/compiler/make-model.js';
import { DEFAULT_BUCKET_POLICY, parseBucketPolicy, servableBuckets, type BucketPolicy } from '../../src/shared/buckets.js';
import { compileKeyFor, keyId } from '../../src/shared/compile-key.js';
import { BatchgenError } from '../../src/shared/errors.js';
import { resolveParams, type GenerationDefaults, type ResolvedParams } from '../../src/shared/params.js';
import { parseRequestLine } from '../../src/shared/requests.js';
import { planBuckets, servableKeys } from '../../src/producer/bucket-plan.js';
import { keyFor } from '../../src/producer/prepare.js';
import { checkPayload } from '../../src/worker/payload.js';
import type { JobPayload } from '../../src/shared/schemas.js';

const greedy = (n: number) => ({ max_new_tokens: n, do_sample: false, num_beams: 1 });

function exhaustive(ctx: number, prompt: BucketPolicy, newTokens: BucketPolicy) {
  const all = new Set<string>();
  const slack15 = new Set<string>();
  for (let p = 1; p < ctx; p++) {
    for (let n = 1; p + n <= ctx; n++) {
      const k = compileKeyFor('m', p, greedy(n), ctx, prompt, newTokens);
      const where = `ctx ${ctx} p ${p} n ${n} → ${keyId(k)}`;
      assert.ok(k.P >= p, where);
      assert.ok(k.N >= n, where);
      assert.ok(k.P + k.N <= ctx, where);
      all.add(keyId(k));
      if (ctx - p - n >= 15) slack15.add(keyId(k));
    }
  }
  return { all: all.size, slack15: slack15.size };
}

test('compileKeyFor: every request with prompt + max_new_tokens ≤ context gets P ≥ prompt, N ≥ max_new_tokens, P + N ≤ context', () => {
  const pow2 = DEFAULT_BUCKET_POLICY;
  for (const ctx of [128, 96, 100]) {
    const r = exhaustive(ctx, pow2, pow2);
    // A request with prompt + max_new_tokens = ctx needs its own key (P = prompt, N = max_new_tokens):
    // ctx - 1 of them are unavoidable. Requests with 15 tokens of slack share few keys.
    assert.ok(r.all <= 2 * ctx, `ctx ${ctx}: ${r.all} keys`);
    assert.ok(r.slack15 <= 16 + ctx / 8, `ctx ${ctx}: ${r.slack15} keys for requests with slack ≥ 15`);
  }
  exhaustive(128, parseBucketPolicy('multiple:24'), pow2);
  exhaustive(128, parseBucketPolicy('16,48,128'), parseBucketPolicy('8,64,128'));
});

test('compileKeyFor: a 67-token prompt with max_new_tokens 4 on a 128-position model fits (was P 128 + N 16)', () => {
  const k = compileKeyFor('m', 67, greedy(4), 128, DEFAULT_BUCKET_POLICY);
  assert.ok(k.P >= 67 && k.N >= 4 && k.P + k.N <= 128, keyId(k));
  // Far from the context the powers of two are kept as they are.
  assert.deepEqual(compileKeyFor('m', 20, greedy(4), 1024, DEFAULT_BUCKET_POLICY), { model: 'm', P: 32, N: 16, strategy: 'greedy' });
  // GPT-2's 513 to 1023 token prompts.
  for (const p of [513, 700, 1000, 1008, 1020]) {
    const kk = compileKeyFor('m', p, greedy(Math.min(1024 - p, 16)), 1024, DEFAULT_BUCKET_POLICY);
    assert.ok(kk.P + kk.N <= 1024 && kk.P >= p, keyId(kk));
  }
});

test('compileKeyFor refuses with context_length_exceeded only what does not fit', () => {
  const refused = (f: () => unknown) =>
    assert.throws(f, (e: unknown) => e instanceof BatchgenError && e.code === 'context_length_exceeded');
  refused(() => compileKeyFor('m', 125, greedy(4), 128, DEFAULT_BUCKET_POLICY));
  refused(() => compileKeyFor('m', 100, greedy(4), 128, parseBucketPolicy('24,48')));
  assert.doesNotThrow(() => compileKeyFor('m', 124, greedy(4), 128, DEFAULT_BUCKET_POLICY));
  // keyFor applies the new-token policy with the same guarantee.
  const k = keyFor('m', 100, { ...greedy(20) } as ResolvedParams, 128, {
    prompt: DEFAULT_BUCKET_POLICY,
    newTokens: parseBucketPolicy('64'),
  });
  assert.ok(k.P >= 100 && k.N >= 20 && k.P + k.N <= 128, keyId(k));
});

test('servableBuckets keeps fitting buckets and caps the prompt bucket first', () => {
  assert.deepEqual(servableBuckets(20, 4, 128, 32, 16), { P: 32, N: 16 });
  assert.deepEqual(servableBuckets(67, 4, 128, 128, 16), { P: 112, N: 16 });
  assert.deepEqual(servableBuckets(10, 100, 128, 16, 128), { P: 16, N: 112 });
  assert.deepEqual(servableBuckets(120, 8, 128, 128, 16), { P: 120, N: 8 });
  assert.equal(servableBuckets(120, 9, 128, 128, 16), null);
});

const defaults: GenerationDefaults = {
  eos_token_id: [99],
  pad_token_id: 99,
  top_k: 20,
  top_p: 0.8,
  repetition_penalty: 1.3,
  num_beams: 1,
  min_new_tokens: 3,
  no_repeat_ngram_size: 2,
  stop_strings: ['END'],
};

function resolvedLine(obj: Record<string, unknown>, d: GenerationDefaults = defaults): ResolvedParams {
  const p = parseRequestLine(JSON.stringify(obj), 1);
  assert.ok(p.ok, JSON.stringify(p));
  return resolveParams(p.request.params, d, () => 1);
}

test("OpenAI lines sample without top-k or repetition penalty, whatever the model's defaults; native lines keep them", () => {
  const oa = (body: Record<string, unknown>) =>
    resolvedLine({ custom_id: 'o', method: 'POST', url: '/v1/completions', body: { model: 'm', prompt: 'x', ...body } });
  const hf: GenerationDefaults = { eos_token_id: [99], pad_token_id: 99 };
  const o = oa({ temperature: 0.7 });
  assert.equal(o.do_sample, true);
  assert.equal(o.top_k, 0);
  assert.equal(o.top_p, 1);
  assert.equal(o.repetition_penalty, 1);
  assert.equal(o.min_new_tokens, 0);
  assert.equal(o.no_repeat_ngram_size, 0);
  assert.deepEqual(o.stop_strings, []);
  assert.equal(
    resolvedLine({ custom_id: 'o', method: 'POST', url: '/v1/completions', body: { model: 'm', prompt: 'x' } }, hf).top_k,
    0,
    'OpenAI line with no generation_config.json got top_k 50',
  );
  assert.equal(oa({ top_p: 0.5, stop: ['\n\n', 'The end'] }).top_p, 0.5);
  assert.deepEqual(oa({ stop: ['\n\n', 'The end'] }).stop_strings, ['\n\n', 'The end']);
  assert.equal(
    resolvedLine(
      { custom_id: 'o', method: 'POST', url: '/v1/completions', body: { model: 'm', prompt: 'x' } },
      { ...defaults, num_beams: 4 },
    ).num_beams,
    1,
  );

  const n = resolvedLine({ custom_id: 'n', model: 'm', prompt: 'x', do_sample: true });
  assert.equal(n.top_k, 20);
  assert.equal(n.repetition_penalty, 1.3);
  assert.equal(n.min_new_tokens, 3);
  assert.deepEqual(n.stop_strings, ['END']);
  assert.equal(
    resolvedLine({ custom_id: 'n', model: 'm', prompt: 'x', do_sample: true }, hf).top_k,
    50,
    "native lines keep Hugging Face's top_k 50",
  );
  assert.deepEqual(
    resolvedLine({ custom_id: 'n', model: 'm', prompt: 'x', stop_strings: ['a b', 'c'], min_new_tokens: 2, no_repeat_ngram_size: 3 }, hf),
    {
      ...resolveParams({}, hf, () => 1),
      stop_strings: ['a b', 'c'],
      min_new_tokens: 2,
      no_repeat_ngram_size: 3,
    },
  );
});

test('stop strings with beam search are refused at submit', () => {
  assert.throws(
    () => resolveParams({ num_beams: 2, stop_strings: ['x'] }, { eos_token_id: [1], pad_token_id: 1 }),
    (e: unknown) => e instanceof BatchgenError && e.code === 'unsupported_parameter',
  );
});

test("checkPayload refuses a queue key whose P + N exceeds the model's context, even for a row that fits", () => {
  const params = resolveParams({ max_new_tokens: 4 }, { eos_token_id: [99], pad_token_id: 99 }, () => 1);
  const payload: JobPayload = {
    v: 1,
    batch_id: 'b1',
    custom_id: 'c1',
    line: 1,
    form: 'native',
    model: 'tiny',
    key: 'tiny:p128:n16:greedy',
    prompt_ids: new Array(67).fill(1),
    params,
    created_at: 1,
  };
  const r = checkPayload('b1/c1', payload, {
    key: { model: 'tiny', P: 128, N: 16, strategy: 'greedy' },
    contextLength: 128,
    vocabSize: 100,
  });
  assert.ok(!r.ok);
  assert.match(r.reason, /prompt bucket 128 plus new-token bucket 16 exceeds the model's context of 128/);
  const ok = checkPayload(
    'b1/c1',
    { ...payload, key: 'tiny:p112:n16:greedy' },
    { key: { model: 'tiny', P: 112, N: 16, strategy: 'greedy' }, contextLength: 128, vocabSize: 100 },
  );
  assert.ok(ok.ok);
});

test('plan-buckets keys: every key of the plan and of powers of two is servable', () => {
  const requests = [
    ...Array.from({ length: 30 }, (_, i) => ({ prompt: 3 + (i % 9), maxNew: 16 })),
    { prompt: 67, maxNew: 4 },
    { prompt: 90, maxNew: 30 },
    { prompt: 120, maxNew: 8 },
  ];
  const plan = planBuckets(
    requests.map((r) => r.prompt),
    3,
  );
  assert.equal(plan.buckets[plan.buckets.length - 1], 120);
  for (const policy of [{ kind: 'list', sizes: plan.buckets } as BucketPolicy, DEFAULT_BUCKET_POLICY]) {
    const s = servableKeys(requests, 128, policy, DEFAULT_BUCKET_POLICY);
    for (const k of s.keys) assert.ok(k.P + k.N <= 128, `${k.P}+${k.N}`);
    assert.ok(s.keys.length >= 2);
    assert.equal(
      s.real,
      requests.reduce((a, r) => a + r.prompt, 0),
    );
  }
  assert.throws(() => servableKeys([{ prompt: 125, maxNew: 4 }], 128, DEFAULT_BUCKET_POLICY, DEFAULT_BUCKET_POLICY), /context/);
});

test('CLI plan-buckets proposes only servable keys and never a bucket equal to the context', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-plan-'));
  try {
    const model = join(dir, 'tiny');
    await makeModel({ out: model, layers: 1, heads: 1, embd: 16, positions: 128, seed: 1 });
    const input = join(dir, 'in.jsonl');
    const lines = [
      ...Array.from({ length: 20 }, (_, i) => ({ custom_id: `s${i}`, model: 'tiny', prompt: ' a'.repeat(3 + (i % 5)) })),
      { custom_id: 'l1', model: 'tiny', prompt: ' a'.repeat(67), max_new_tokens: 4 },
      { custom_id: 'l2', model: 'tiny', prompt: ' a'.repeat(100), max_new_tokens: 20 },
      { custom_id: 'x', model: 'tiny', prompt: ' a'.repeat(100), max_new_tokens: 40 },
    ];
    writeFileSync(input, lines.map((l) => JSON.stringify(l)).join('\n'));
    const bin = fileURLToPath(new URL('../../../bin/batchgen.js', import.meta.url));
    const run = (args: string[]) =>
      spawnSync(process.execPath, [bin, 'plan-buckets', input, '--model', model, ...args], { encoding: 'utf8', timeout: 60_000 });
    const r = run(['--max-buckets', '3', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const o = JSON.parse(r.stdout);
    assert.equal(o.prompts, 22);
    assert.equal(o.too_long, 1);
    for (const k of [...o.plan.keys, ...o.pow2.keys]) assert.ok(k.P + k.N <= 128, JSON.stringify(k));
    assert.ok(
      o.pow2.keys.some((k: { P: number }) => k.P > 64),
      'the long prompts have a key',
    );
    const t = run(['--max-buckets', '3']);
    assert.equal(t.status, 0, t.stderr);
    const use = /--buckets (\S+)/.exec(t.stdout);
    assert.ok(use, t.stdout);
    assert.ok(
      use[1].split(',').every((b) => Number(b) < 128),
      `proposed ${use[1]}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
