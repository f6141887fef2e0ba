/** Pure tests of the shared contracts: request forms, OpenAI mapping, payloads, key names, output lines. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseRequestLine, fromOpenAI, jsonlLines } from '../../src/shared/requests.js';
import { JobPayload, OpenAICompletionBody, NativeRequest } from '../../src/shared/schemas.js';
import { Keyspace, jobIdOf, parseJobId, checkModelName } from '../../src/shared/keys.js';
import { formatResultLine, toOpenAIBatch, type OpenAIResultLine } from '../../src/shared/output.js';
import { parseModelSpecs } from '../../src/shared/models.js';
import { modelNameForFolder } from '../../src/shared/keys.js';
import type { ResultRecord } from '../../src/shared/schemas.js';

const line = (o: unknown, n = 1) => parseRequestLine(JSON.stringify(o), n);

test('native line: parameters with Hugging Face names', () => {
  const p = line({ custom_id: 'r1', model: 'gpt2', prompt: 'TensorFlow is', max_new_tokens: 32, do_sample: true, top_p: 0.9, seed: 7 });
  assert.ok(p.ok);
  assert.equal(p.request.form, 'native');
  assert.deepEqual(p.request.params, { max_new_tokens: 32, do_sample: true, top_p: 0.9, seed: 7 });
  assert.equal(p.request.prompt, 'TensorFlow is');
});

test('native line: an unknown parameter is an error for that line, not ignored', () => {
  const p = line({ custom_id: 'r1', model: 'gpt2', prompt: 'x', max_tokens: 5 }, 4);
  assert.ok(!p.ok);
  assert.equal(p.counted, true);
  assert.equal(p.error.line, 4);
  assert.equal(p.error.custom_id, 'r1');
  assert.equal(p.error.error.code, 'unsupported_parameter');
  assert.match(p.error.error.message, /max_tokens/);
});

test('native line: bad values name the field', () => {
  const p = line({ custom_id: 'r1', model: 'gpt2', prompt: 'x', top_p: 2 });
  assert.ok(!p.ok);
  assert.equal(p.error.error.code, 'invalid_request');
  assert.match(p.error.error.message, /top_p/);
});

test('bad JSON and missing custom_id are rejected lines, not counted', () => {
  const a = parseRequestLine('{"custom_id": "bad", "prompt": ', 3);
  assert.ok(!a.ok);
  assert.equal(a.counted, false);
  assert.equal(a.error.line, 3);
  assert.equal(a.error.custom_id, null);
  const b = line({ model: 'gpt2', prompt: 'x' }, 9);
  assert.ok(!b.ok);
  assert.equal(b.counted, false);
  assert.match(b.error.error.message, /custom_id/);
  const c = parseRequestLine('[1,2]', 2);
  assert.ok(!c.ok && !c.counted);
});

test('model names are never paths', () => {
  for (const bad of ['../etc', '/etc/passwd', 'a/b', '.hidden', 'a:b', '']) {
    assert.throws(() => checkModelName(bad), /model name/);
    const p = line({ custom_id: 'x', model: bad, prompt: 'hi' });
    assert.ok(!p.ok, bad);
  }
  assert.equal(checkModelName('gpt2-medium.v1_2'), 'gpt2-medium.v1_2');
});

const oa = (body: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  line({ custom_id: 'o1', method: 'POST', url: '/v1/completions', body: { model: 'gpt2', prompt: 'hi', ...body }, ...extra });

test('OpenAI line: defaults keep OpenAI meaning (max_tokens 16, temperature 1 samples)', () => {
  const p = oa({});
  assert.ok(p.ok);
  assert.equal(p.request.form, 'openai');
  assert.deepEqual(p.request.params, {
    max_new_tokens: 16,
    do_sample: true,
    temperature: 1,
    top_k: 0,
    top_p: 1,
    repetition_penalty: 1,
    num_beams: 1,
    min_new_tokens: 0,
    no_repeat_ngram_size: 0,
    stop_strings: [],
  });
});

test('OpenAI line: temperature 0 is greedy; top_p, seed, max_tokens map', () => {
  const p = oa({ temperature: 0, max_tokens: 32, top_p: 0.5, seed: 11 });
  assert.ok(p.ok);
  assert.deepEqual(p.request.params, {
    max_new_tokens: 32,
    do_sample: false,
    top_k: 0,
    top_p: 0.5,
    repetition_penalty: 1,
    num_beams: 1,
    min_new_tokens: 0,
    no_repeat_ngram_size: 0,
    stop_strings: [],
    seed: 11,
  });
  const q = oa({ temperature: 0.7 });
  assert.ok(q.ok);
  assert.deepEqual(q.request.params, {
    max_new_tokens: 16,
    do_sample: true,
    temperature: 0.7,
    top_k: 0,
    top_p: 1,
    repetition_penalty: 1,
    num_beams: 1,
    min_new_tokens: 0,
    no_repeat_ngram_size: 0,
    stop_strings: [],
  });
});

test('OpenAI line: stop becomes stop strings; a one-prompt array is that prompt', () => {
  const p = oa({ stop: ['\n', '.'], prompt: ['only one'] });
  assert.ok(p.ok);
  assert.deepEqual(p.request.params.stop_strings, ['\n', '.']);
  assert.equal(p.request.prompt, 'only one');
  const q = oa({ stop: '\n' });
  assert.ok(q.ok);
  assert.deepEqual(q.request.params.stop_strings, ['\n']);
});

test('OpenAI line: n > 1 and unsupported parameters are clear errors', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ n: 2 }, /only n=1/],
    [{ best_of: 3 }, /best_of/],
    [{ stream: true }, /stream/],
    [{ echo: true }, /echo/],
    [{ logprobs: 2 }, /logprobs/],
    [{ presence_penalty: 0.5 }, /presence_penalty/],
    [{ frequency_penalty: 1 }, /frequency_penalty/],
    [{ logit_bias: { '50256': -100 } }, /logit_bias/],
    [{ suffix: 'x' }, /suffix/],
    [{ prompt: ['a', 'b'] }, /one prompt/],
    [{ top_k: 5 }, /top_k/],
  ];
  for (const [body, re] of cases) {
    const p = oa(body);
    assert.ok(!p.ok, JSON.stringify(body));
    assert.equal(p.counted, true);
    assert.equal(p.error.custom_id, 'o1');
    assert.equal(p.error.error.code, 'unsupported_parameter', JSON.stringify(body));
    assert.match(p.error.error.message, re);
  }
  // neutral values are accepted
  assert.ok(oa({ n: 1, best_of: 1, stream: false, echo: false, presence_penalty: 0, frequency_penalty: 0, logit_bias: {}, user: 'u1' }).ok);
});

test('OpenAI line: other endpoints and methods are refused', () => {
  const p = line({ custom_id: 'o1', method: 'POST', url: '/v1/embeddings', body: { model: 'gpt2', input: 'x' } });
  assert.ok(!p.ok);
  assert.match(p.error.error.message, /only \/v1\/completions and \/v1\/chat\/completions are served/);
  const q = line({ custom_id: 'o1', method: 'GET', url: '/v1/completions', body: { model: 'gpt2', prompt: 'x' } });
  assert.ok(!q.ok);
});

test('fromOpenAI maps a parsed body', () => {
  const body = OpenAICompletionBody.parse({ model: 'm', prompt: [1, 2, 3], max_tokens: null, temperature: null });
  assert.deepEqual(fromOpenAI(body), {
    prompt: [1, 2, 3],
    params: {
      max_new_tokens: 16,
      do_sample: true,
      temperature: 1,
      top_k: 0,
      top_p: 1,
      repetition_penalty: 1,
      num_beams: 1,
      min_new_tokens: 0,
      no_repeat_ngram_size: 0,
      stop_strings: [],
    },
  });
});

test('native prompt may be token ids', () => {
  assert.ok(NativeRequest.safeParse({ custom_id: 'a', model: 'm', prompt: [1, 2] }).success);
  assert.ok(!NativeRequest.safeParse({ custom_id: 'a', model: 'm', prompt: [-1] }).success);
});

test('jsonlLines numbers lines from 1 and skips blanks', () => {
  assert.deepEqual(
    [...jsonlLines('a\n\n b \n')],
    [
      { line: 1, text: 'a' },
      { line: 3, text: 'b' },
    ],
  );
});

const goodPayload = {
  v: 1,
  batch_id: 'b1',
  custom_id: 'c1',
  line: 1,
  form: 'native',
  model: 'gpt2',
  key: 'gpt2:p16:n16:greedy',
  prompt_ids: [1, 2, 3],
  params: {
    max_new_tokens: 4,
    do_sample: false,
    temperature: 1,
    top_k: 50,
    top_p: 1,
    repetition_penalty: 1,
    seed: 1,
    num_beams: 1,
    length_penalty: 1,
    early_stopping: false,
    stop_ids: [50256],
    pad_token_id: 50256,
  },
  created_at: 1,
};

test('job payload: the schema accepts a good payload and refuses tampered ones', () => {
  assert.ok(JobPayload.safeParse(goodPayload).success);
  const bad = [
    { ...goodPayload, model: '../../etc' },
    { ...goodPayload, prompt_ids: new Array(9000).fill(1) },
    { ...goodPayload, prompt_ids: [] },
    { ...goodPayload, extra: 1 },
    { ...goodPayload, params: { ...goodPayload.params, temperature: -1 } },
    { ...goodPayload, v: 2 },
  ];
  for (const b of bad) assert.ok(!JobPayload.safeParse(b).success);
});

test('queue names: <prefix>:gen:<model>:p<P>:n<N>:<strategy>, split for BullMQ', () => {
  const ks = new Keyspace({ prefix: 'batchgen' });
  const q = ks.queue({ model: 'gpt2', P: 64, N: 32, strategy: 'greedy' });
  assert.equal(q.name, 'batchgen:gen:gpt2:p64:n32:greedy');
  assert.equal(q.bullPrefix, 'batchgen:gen:gpt2:p64:n32');
  assert.equal(q.bullName, 'greedy');
  assert.ok(!q.bullName.includes(':'));
  assert.equal(q.waitList, 'batchgen:gen:gpt2:p64:n32:greedy:wait');
  assert.deepEqual(ks.keyOfQueue(q.name), { model: 'gpt2', P: 64, N: 32, strategy: 'greedy' });
  assert.equal(ks.keyOfQueue('other:gen:x'), null);
  assert.equal(ks.queue('gpt2:p16:n16:beam4').name, 'batchgen:gen:gpt2:p16:n16:beam4');
});

test('hash-tag prefix puts every key in one cluster slot', () => {
  const ks = new Keyspace({ prefix: 'batchgen', hashTag: true });
  assert.equal(ks.prefix, '{batchgen}');
  assert.equal(ks.queue('m:p16:n16:sample').name, '{batchgen}:gen:m:p16:n16:sample');
  assert.ok(ks.batch('b1').results.startsWith('{batchgen}:batch:b1'));
  assert.equal(ks.registry(), '{batchgen}:registry');
  assert.equal(new Keyspace({ prefix: '{x}' }).prefix, '{x}');
  assert.throws(() => new Keyspace({ prefix: 'has space' }), /prefix/);
});

test('job ids: <batchId>/<customId>, any custom_id round-trips, no bare ":"', () => {
  for (const cid of ['r1', 'a:b', 'a/b', '100%', 'x%3Ay', '12']) {
    const id = jobIdOf('batch1', cid);
    assert.ok(!id.includes(':'), id);
    assert.deepEqual(parseJobId(id), { batchId: 'batch1', customId: cid });
  }
  assert.equal(jobIdOf('b', 'r1'), 'b/r1');
});

test('batch ids are checked', () => {
  const ks = new Keyspace();
  assert.throws(() => ks.batch('a/b'), /batch id/);
  assert.throws(() => ks.batch('a:b'), /batch id/);
  assert.equal(ks.batch('ok_1-2.3').record, 'batchgen:batch:ok_1-2.3');
});

const result = (form: 'native' | 'openai', finish: 'eos' | 'length'): ResultRecord => ({
  custom_id: 'c1',
  line: 2,
  form,
  model: 'tiny',
  text: ' hello',
  token_ids: [1, 2, 50256],
  finish_reason: finish,
  prompt_tokens: 4,
  completion_tokens: 3,
  seed: 5,
  key: 'tiny:p16:n16:greedy',
  worker: 'w1',
  created_at: 1000,
  finished_at: 5000,
});

test('native output line fields', () => {
  assert.deepEqual(formatResultLine(result('native', 'eos'), 'b'), {
    custom_id: 'c1',
    text: ' hello',
    token_ids: [1, 2, 50256],
    finish_reason: 'eos',
    usage: { prompt_tokens: 4, completion_tokens: 3 },
    error: null,
  });
});

test('OpenAI output line: batch line with a text_completion body; stable ids', () => {
  const a = formatResultLine(result('openai', 'eos'), 'b') as OpenAIResultLine;
  assert.equal(a.custom_id, 'c1');
  assert.equal(a.response.status_code, 200);
  assert.equal(a.response.body.object, 'text_completion');
  assert.equal(a.response.body.choices[0].text, ' hello');
  assert.equal(a.response.body.choices[0].finish_reason, 'stop');
  assert.equal(a.response.body.created, 5);
  assert.deepEqual(a.response.body.usage, { prompt_tokens: 4, completion_tokens: 3, total_tokens: 7 });
  assert.equal(a.error, null);
  assert.deepEqual(formatResultLine(result('openai', 'eos'), 'b'), a);
  assert.equal((formatResultLine(result('openai', 'length'), 'b') as OpenAIResultLine).response.body.choices[0].finish_reason, 'length');
});

test('OpenAI batch object from a record', () => {
  const o = toOpenAIBatch({
    id: 'b',
    status: 'in_progress',
    created_at: 2500,
    in_progress_at: 3000,
    completed_at: null,
    cancelling_at: null,
    cancelled_at: null,
    failed_at: null,
    expires_at: null,
    retention_s: 10,
    input: 'in.jsonl',
    counts: { total: 3, completed: 1, failed: 1, cancelled: 0, rejected: 2 },
  });
  assert.equal(o.object, 'batch');
  assert.equal(o.created_at, 2);
  assert.deepEqual(o.request_counts, { total: 3, completed: 1, failed: 1 });
});

test('model specs: NAME=DIR flags, else BATCHGEN_MODELS', () => {
  assert.deepEqual(
    parseModelSpecs(['a=/m/a']).map((m) => m.name),
    ['a'],
  );
  assert.deepEqual(
    parseModelSpecs([], 'a=/x,b=/y').map((m) => [m.name, m.dir]),
    [
      ['a', '/x'],
      ['b', '/y'],
    ],
  );
  assert.equal(parseModelSpecs(['/models/gpt2'])[0].name, 'gpt2');
  // a bare folder is named as `batchgen generate` names it, whatever command reads it
  assert.equal(parseModelSpecs(['/models/gpt2 small'])[0].name, 'gpt2-small');
  assert.equal(parseModelSpecs(['/models/gpt2 small'])[0].name, modelNameForFolder('/models/gpt2 small'));
  assert.equal(modelNameForFolder('/models/..weird'), 'weird');
  assert.throws(() => parseModelSpecs(['a=/x', 'a=/y']), /twice/);
  assert.throws(() => parseModelSpecs(['../x=/y']), /model name/);
});
