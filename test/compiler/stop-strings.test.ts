/**
 * Stop strings checked on the host across token boundaries, min_new_tokens and no_repeat_ngram_size
 * bans, and servable keys near the context, on small random models.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CompiledVariant, generateRows, recentRetraces, retraces, VariantCache, type LoadedModel } from '../../src/compiler/index.js';
import { bannedTokens, repeatedNgramBans } from '../../src/compiler/bans.js';
import { checkStopStrings, firstStop } from '../../src/compiler/stop-strings.js';
import { BatchgenError } from '../../src/shared/errors.js';
import { formatResultLine, type OpenAIResultLine } from '../../src/shared/output.js';
import { resultRecord } from '../../src/worker/results.js';
import type { JobPayload } from '../../src/shared/schemas.js';
import { params, randomIds, smallModel } from '../helpers/compiler-fixtures.js';

// ---- pure: the host matcher and the bans ----

const pieces = ['Hel', 'lo\n', '\nWor', 'ld', ' The', ' e', 'nd'];
const fakeDecode = async (ids: number[]) => ids.map((i) => pieces[i]).join('');

test('firstStop: the earliest of several stops wins, wherever it lies in the list', () => {
  assert.deepEqual(firstStop('abc\n\nThe end', ['The end', '\n\n']), { index: 3, stop: '\n\n' });
  assert.deepEqual(firstStop('abc\n\nThe end', ['end', 'The']), { index: 5, stop: 'The' });
  assert.deepEqual(firstStop('xyz', ['a', 'b']), null);
  assert.deepEqual(firstStop('aab', ['ab', 'a']), { index: 0, stop: 'a' });
});

test('checkStopStrings: a stop spanning token boundaries is found at the step that completes it, text cut before it', async () => {
  const stops = ['\n\n', 'The end'];
  assert.equal(await checkStopStrings([0], stops, fakeDecode), null);
  assert.equal(await checkStopStrings([0, 1], stops, fakeDecode), null, '"\\n" alone is no stop');
  assert.deepEqual(await checkStopStrings([0, 1, 2], stops, fakeDecode), { text: 'Hello', stop: '\n\n' });
  // Only "The end" given: it completes over three tokens.
  assert.equal(await checkStopStrings([3, 4, 5], ['The end'], fakeDecode), null);
  assert.deepEqual(await checkStopStrings([3, 4, 5, 6], ['The end'], fakeDecode), { text: 'ld ', stop: 'The end' });
  assert.equal(await checkStopStrings([0, 1], [], fakeDecode), null);
});

test('repeatedNgramBans: tokens that would repeat an n-gram of the sequence (Hugging Face semantics)', () => {
  assert.deepEqual(repeatedNgramBans([1, 2, 3, 1], 2).sort(), [2]);
  assert.deepEqual(repeatedNgramBans([1, 2, 1, 3, 1], 2).sort(), [2, 3]);
  assert.deepEqual(repeatedNgramBans([1, 2, 3, 1, 2], 3), [3]);
  assert.deepEqual(repeatedNgramBans([1, 2, 3, 1, 3], 3), []);
  assert.deepEqual(repeatedNgramBans([5], 3), []);
  assert.deepEqual(repeatedNgramBans([4, 4, 7], 1).sort(), [4, 7]);
  assert.deepEqual(bannedTokens({ stop_ids: [9, 8], min_new_tokens: 2 }, [1], [5]).sort(), [8, 9]);
  assert.deepEqual(bannedTokens({ stop_ids: [9, 8], min_new_tokens: 2 }, [1], [5, 6]), []);
});

test('a stop-string result keeps its cut text; OpenAI reports finish_reason stop', async () => {
  const p = params({ defaults: { eos_token_id: [0], pad_token_id: 0 } } as unknown as LoadedModel, { stop_strings: ['\n\n'] });
  const payload: JobPayload = {
    v: 1,
    batch_id: 'b',
    custom_id: 'c',
    line: 1,
    form: 'openai',
    model: 'm',
    key: 'm:p16:n16:greedy',
    prompt_ids: [1],
    params: p,
    created_at: 1,
  };
  const rec = await resultRecord(payload, { tokenIds: [0, 1, 2], finishReason: 'stop', text: 'Hello' }, fakeDecode, {
    worker: 'w',
    deliveries: 1,
  });
  assert.equal(rec.text, 'Hello');
  assert.deepEqual(rec.token_ids, [0, 1, 2]);
  const line = formatResultLine(rec, 'b') as OpenAIResultLine;
  assert.ok('response' in line);
  assert.equal(line.response.body.choices[0].finish_reason, 'stop');
  assert.equal(line.response.body.choices[0].text, 'Hello');
});

// ---- on a random model ----

let m: LoadedModel;
let cache: VariantCache;

before(async () => {
  m = await smallModel('stops', { seed: 5 });
  cache = new VariantCache();
});

after(async () => {
  await cache.dispose();
  m.dispose();
});

test('a 67-token prompt with max_new_tokens 4 on a 128-position model generates (its key fits the context)', async () => {
  assert.equal(m.contextLength, 128);
  const [r] = await generateRows(m, [{ promptIds: randomIds(67, 3), params: params(m, { max_new_tokens: 4 }) }], { cache });
  assert.equal(r.tokenIds.length <= 4 && r.tokenIds.length >= 1, true);
  const [s] = await generateRows(
    m,
    [{ promptIds: randomIds(120, 4), params: params(m, { max_new_tokens: 8, do_sample: true, seed: 2 }) }],
    { cache },
  );
  assert.ok(s.tokenIds.length >= 1 && s.tokenIds.length <= 8);
});

test("compiling a variant whose P + N exceeds the model's context is a clear error, not a kernel crash", async () => {
  await assert.rejects(CompiledVariant.compile(m, { model: m.name, P: 128, N: 16, strategy: 'greedy' }, 1), (e: unknown) => {
    assert.ok(e instanceof BatchgenError, String(e));
    assert.equal(e.code, 'context_length_exceeded');
    assert.match(e.message, /prompt bucket 128 plus new-token bucket 16 exceeds the model's context of 128/);
    return true;
  });
});

test("a stop string taken from the model's own greedy output ends the row: finish_reason stop, text cut before it", async () => {
  const prompt = randomIds(9, 11);
  const opts = { cache };
  const [full] = await generateRows(m, [{ promptIds: prompt, params: params(m, { max_new_tokens: 12 }) }], opts);
  assert.equal(full.tokenIds.length, 12);
  // A two-token piece of the output, spanning a token boundary, clean text (no split characters).
  let stop = '';
  for (let i = 2; i + 2 <= full.tokenIds.length && !stop; i++) {
    const piece = await m.decode(full.tokenIds.slice(i, i + 2));
    const a = await m.decode(full.tokenIds.slice(i, i + 1));
    if (piece.length >= 2 && a.length >= 1 && a.length < piece.length && !piece.includes('\uFFFD')) stop = piece;
  }
  assert.ok(stop, 'no clean two-token piece in the greedy output');
  const [r] = await generateRows(
    m,
    [{ promptIds: prompt, params: params(m, { max_new_tokens: 12, stop_strings: ['never-there-zzz', stop] }) }],
    opts,
  );
  assert.equal(r.finishReason, 'stop');
  // Greedy: the same tokens, up to the one that completed the stop.
  assert.deepEqual(r.tokenIds, full.tokenIds.slice(0, r.tokenIds.length));
  const upTo = await m.decode(r.tokenIds);
  const before = await m.decode(r.tokenIds.slice(0, -1));
  assert.ok(upTo.includes(stop), 'the returned ids contain the stop');
  assert.ok(!before.includes(stop), 'the stop was complete only with the last returned token');
  assert.equal(r.text, upTo.slice(0, upTo.indexOf(stop)));
  assert.ok(!r.text!.includes(stop));
});

test('min_new_tokens masks stop ids until that many tokens', async () => {
  const prompt = randomIds(7, 21);
  const [free] = await generateRows(m, [{ promptIds: prompt, params: params(m, { max_new_tokens: 8 }) }], { cache });
  const stopId = free.tokenIds[0];
  const [early] = await generateRows(m, [{ promptIds: prompt, params: params(m, { max_new_tokens: 8, stop_token_ids: [stopId] }) }], {
    cache,
  });
  assert.deepEqual(early, { tokenIds: [stopId], finishReason: 'eos' });
  const [held] = await generateRows(
    m,
    [{ promptIds: prompt, params: params(m, { max_new_tokens: 8, stop_token_ids: [stopId], min_new_tokens: 3 }) }],
    { cache },
  );
  assert.ok(held.tokenIds.length >= 3, `${held.tokenIds.length} tokens`);
  assert.ok(!held.tokenIds.slice(0, 3).includes(stopId), `stop id ${stopId} chosen before 3 tokens: ${held.tokenIds}`);
  const eos = m.defaults.eos_token_id;
  assert.ok(!held.tokenIds.slice(0, 3).some((t) => eos.includes(t)));
});

test('no_repeat_ngram_size: no n-gram of prompt + generated occurs twice', async () => {
  const prompt = [5, 6, 5, 6, 5];
  const rows = (extra: object) => [{ promptIds: prompt, params: params(m, { max_new_tokens: 16, ...extra }) }];
  const bigramRepeats = (seq: number[]) =>
    seq.slice(prompt.length - 1, -1).some((t, j) => {
      const i = prompt.length - 1 + j;
      for (let k = 0; k < i; k++) if (seq[k] === t && seq[k + 1] === seq[i + 1]) return true;
      return false;
    });
  const [plain] = await generateRows(m, rows({}), { cache });
  assert.ok(bigramRepeats([...prompt, ...plain.tokenIds]), 'the unbanned output repeats a bigram (else this test shows nothing)');
  const [r] = await generateRows(m, rows({ no_repeat_ngram_size: 2 }), { cache });
  assert.ok(!bigramRepeats([...prompt, ...r.tokenIds]));
  const seq = [...prompt.slice(0), ...r.tokenIds];
  // the prompt itself repeats (5,6): only bigrams that end in a generated token are checked
  const seen = new Set<string>();
  for (let i = 0; i + 1 < prompt.length; i++) seen.add(`${seq[i]},${seq[i + 1]}`);
  for (let i = prompt.length - 1; i + 1 < seq.length; i++) {
    const g = `${seq[i]},${seq[i + 1]}`;
    assert.ok(!seen.has(g), `bigram ${g} repeated in ${seq}`);
    seen.add(g);
  }
});

test('after warm-up, rows with stop strings, min_new_tokens and no_repeat_ngram_size cause no retrace', async () => {
  const v = await cache.get(m, { model: m.name, P: 16, N: 16, strategy: 'sample' }, 4);
  const base = retraces();
  const rows = [0, 1, 2, 3].map((i) => ({
    promptIds: randomIds(3 + 4 * i, 40 + i),
    params: params(m, {
      max_new_tokens: 16,
      do_sample: true,
      seed: i,
      min_new_tokens: [0, 2, 5, 16][i],
      no_repeat_ngram_size: [0, 2, 3, 1][i],
      stop_strings: i % 2 ? ['e', ' the'] : [],
      repetition_penalty: i === 3 ? 1.3 : 1,
      top_p: i === 2 ? 0.9 : 1,
    }),
  }));
  await v.run(rows);
  await v.run(rows.slice(0, 2));
  assert.equal(retraces(), base, recentRetraces().join('\n'));
});
