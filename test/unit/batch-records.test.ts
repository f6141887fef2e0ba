/** Pure pieces of batch records and results files: fingerprints, progress rate, output lines, the batch object. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalJson, requestEndpointOf, requestFingerprint, requestFormOf } from '../../src/producer/request-identity.js';
import { etaMs, slidingRate, trimSamples } from '../../src/cli/progress.js';
import { formatOpenAIErrorLine, formatResultLine, formatSettledLine, toOpenAIBatch } from '../../src/shared/output.js';
import type { ResultRecord } from '../../src/shared/schemas.js';

test('fingerprint: key order and whitespace do not matter, any change of content does', () => {
  const a = { custom_id: 'r1', model: 'tiny', prompt: 'hi', max_new_tokens: 4, stop: ['x', 'y'] };
  const b = JSON.parse('{ "stop": ["x","y"], "max_new_tokens": 4, "prompt": "hi", "model": "tiny", "custom_id": "r1" }');
  assert.equal(canonicalJson(a), canonicalJson(b));
  assert.equal(requestFingerprint(a), requestFingerprint(b));
  assert.notEqual(requestFingerprint(a), requestFingerprint({ ...a, prompt: 'hi!' }));
  assert.notEqual(requestFingerprint(a), requestFingerprint({ ...a, max_new_tokens: 5 }));
  assert.notEqual(requestFingerprint(a), requestFingerprint({ ...a, stop: ['y', 'x'] }));
  const o = { custom_id: 'o', method: 'POST', url: '/v1/chat/completions', body: { model: 'm', temperature: 0, messages: [] } };
  assert.notEqual(requestFingerprint(o), requestFingerprint({ ...o, body: { ...o.body, temperature: 1 } }));
});

test('form and endpoint of a line come from the line', () => {
  assert.equal(requestFormOf({ custom_id: 'a', prompt: 'x' }), 'native');
  assert.equal(requestFormOf({ custom_id: 'a', url: '/v1/completions', body: {} }), 'openai');
  assert.equal(requestEndpointOf({ custom_id: 'a', url: '/v1/chat/completions', body: {} }), '/v1/chat/completions');
  assert.equal(requestEndpointOf({ custom_id: 'a', url: '/v1/completions', body: {} }), '/v1/completions');
  assert.equal(requestEndpointOf({ custom_id: 'a', model: 'm', messages: [] }), '/v1/chat/completions');
  assert.equal(requestEndpointOf({ custom_id: 'a', model: 'm', prompt: 'x' }), '/v1/completions');
});

test('the rate is measured over a sliding window and falls to 0 while nothing completes', () => {
  const s = [
    { t: 0, done: 0 },
    { t: 10_000, done: 100 },
  ];
  assert.equal(slidingRate(s, 10_000, 30_000), 10); // 100 in 10 s
  assert.equal(slidingRate(s, 20_000, 30_000), 5); // nothing since: 100 in 20 s
  assert.equal(slidingRate(s, 40_000, 30_000), 0); // nothing within the last 30 s
  assert.equal(etaMs(100, 200, 0), null);
  assert.equal(etaMs(100, 200, 10), 10_000);
  assert.equal(etaMs(200, 200, 0), 0);
  assert.equal(slidingRate([], 5, 30_000), 0);
  // trimming keeps what the window needs: the rate is the same after it
  const many = Array.from({ length: 100 }, (_, i) => ({ t: i * 1000, done: i * 2 }));
  const trimmed = trimSamples(many, 99_000, 30_000);
  assert.ok(trimmed.length < many.length);
  assert.equal(slidingRate(trimmed, 99_000, 30_000), slidingRate(many, 99_000, 30_000));
});

const result = (form: 'native' | 'openai', key: string): ResultRecord => ({
  custom_id: 'c1',
  line: 1,
  form,
  model: 'tiny',
  text: ' hi',
  token_ids: [1, 2],
  finish_reason: 'length',
  prompt_tokens: 2,
  completion_tokens: 2,
  seed: 77,
  key,
  worker: 'w',
  created_at: 1,
  finished_at: 2000,
});

test('native result lines carry the seed when the request was sampled, and only then', () => {
  assert.equal((formatResultLine(result('native', 'tiny:p16:n16:sample'), 'b') as { seed?: number }).seed, 77);
  assert.equal('seed' in formatResultLine(result('native', 'tiny:p16:n16:greedy'), 'b'), false);
  assert.equal('seed' in formatResultLine(result('native', 'tiny:p16:n16:beam2'), 'b'), false);
});

test('a failed OpenAI-form request gets an OpenAI error line; a failed native one none', () => {
  const e = { line: 3, custom_id: 'o1', error: { code: 'unknown_model', message: 'model "x" is not known' } };
  const l = formatOpenAIErrorLine(e, 'b');
  assert.equal(l.custom_id, 'o1');
  assert.match(l.id, /^batch_req_/);
  assert.equal(l.response.status_code, 400);
  assert.match(l.response.request_id, /^req_/);
  assert.deepEqual(l.response.body.error, { message: e.error.message, type: 'invalid_request_error', param: null, code: 'unknown_model' });
  assert.deepEqual(l.error, e.error);
  assert.equal(formatOpenAIErrorLine({ ...e, error: { code: 'generation_failed', message: 'm' } }, 'b').response.status_code, 500);
  assert.deepEqual(formatSettledLine({ custom_id: 'o1', error: e }, 'openai', 'b'), l);
  assert.equal(formatSettledLine({ custom_id: 'o1', error: e }, 'native', 'b'), null);
});

test('the batch object gives the endpoint of its lines, its files and its input errors as OpenAI lists them', () => {
  const rec = {
    id: 'b',
    status: 'completed' as const,
    created_at: 1000,
    in_progress_at: 1000,
    completed_at: 2000,
    cancelling_at: null,
    cancelled_at: null,
    failed_at: null,
    expires_at: null,
    retention_s: 10,
    input: 'in.jsonl',
    endpoints: ['/v1/chat/completions'],
    output_file: '/tmp/out.jsonl',
    error_file: null,
    counts: { total: 2, completed: 1, failed: 1, cancelled: 0, rejected: 1 },
  };
  const o = toOpenAIBatch(rec, [{ line: 2, custom_id: null, error: { code: 'invalid_request', message: 'line 2 is not JSON' } }]);
  assert.equal(o.endpoint, '/v1/chat/completions');
  assert.equal(toOpenAIBatch({ ...rec, endpoints: ['/v1/completions'] }).endpoint, '/v1/completions');
  assert.equal(o.output_file_id, '/tmp/out.jsonl');
  assert.equal(o.error_file_id, null);
  assert.deepEqual(o.errors, { object: 'list', data: [{ code: 'invalid_request', line: 2, message: 'line 2 is not JSON', param: null }] });
  assert.equal(toOpenAIBatch(rec).errors, null);
});
