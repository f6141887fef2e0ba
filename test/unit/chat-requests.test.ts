/**
 * Chat request lines: the OpenAI /v1/chat/completions mapping (each parameter and its default),
 * its errors, native lines with messages, and the chat.completion output line.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chatDefaultMaxTokens, CHAT_DEFAULT_MAX_TOKENS_CAP } from '../../src/shared/openai-chat.js';
import { formatResultLine, formatSettledLine, type OpenAIChatResultLine } from '../../src/shared/output.js';
import { parseRequestValue } from '../../src/shared/requests.js';
import type { ResultRecord } from '../../src/shared/schemas.js';

const USER = [{ role: 'user', content: 'Hi' }];
const chat = (body: Record<string, unknown>) =>
  parseRequestValue({ custom_id: 'c1', method: 'POST', url: '/v1/chat/completions', body: { model: 'm', messages: USER, ...body } }, 3);

function ok(body: Record<string, unknown>) {
  const p = chat(body);
  if (!p.ok) assert.fail(`${JSON.stringify(body)}: ${p.error.error.message}`);
  return p.request;
}

function refused(body: Record<string, unknown>, code: string, re: RegExp) {
  const p = chat(body);
  assert.ok(!p.ok, JSON.stringify(body));
  assert.equal(p.counted, true);
  assert.equal(p.error.custom_id, 'c1');
  assert.equal(p.error.line, 3);
  assert.equal(p.error.error.code, code, `${JSON.stringify(body)}: ${p.error.error.message}`);
  assert.match(p.error.error.message, re);
}

test('a chat line keeps OpenAI meaning: temperature 1 by default, no top-k, no penalty, no max_tokens', () => {
  const r = ok({});
  assert.equal(r.form, 'openai_chat');
  assert.equal(r.model, 'm');
  assert.equal(r.prompt, undefined);
  assert.deepEqual(r.messages, [{ role: 'user', content: 'Hi' }]);
  assert.deepEqual(r.params, {
    top_k: 0,
    top_p: 1,
    repetition_penalty: 1,
    num_beams: 1,
    min_new_tokens: 0,
    no_repeat_ngram_size: 0,
    stop_strings: [],
    do_sample: true,
    temperature: 1,
  });
});

test('each chat parameter maps to its generation counterpart', () => {
  const r = ok({ max_tokens: 12, temperature: 0.5, top_p: 0.9, seed: 4, stop: 'END' });
  assert.equal(r.params.max_new_tokens, 12);
  assert.equal(r.params.do_sample, true);
  assert.equal(r.params.temperature, 0.5);
  assert.equal(r.params.top_p, 0.9);
  assert.equal(r.params.seed, 4);
  assert.deepEqual(r.params.stop_strings, ['END']);
  const g = ok({ max_completion_tokens: 7, temperature: 0, stop: ['a', 'b', 'c', 'd'] });
  assert.equal(g.params.max_new_tokens, 7);
  assert.equal(g.params.do_sample, false);
  assert.equal(g.params.temperature, undefined);
  assert.deepEqual(g.params.stop_strings, ['a', 'b', 'c', 'd']);
  assert.equal(ok({ max_tokens: 5, max_completion_tokens: 5 }).params.max_new_tokens, 5);
  // neutral values and metadata are accepted
  ok({
    n: 1,
    stream: false,
    logprobs: false,
    top_logprobs: 0,
    presence_penalty: 0,
    frequency_penalty: 0,
    logit_bias: {},
    response_format: { type: 'text' },
    tools: [],
    tool_choice: 'none',
    parallel_tool_calls: true,
    modalities: ['text'],
    store: false,
    service_tier: 'auto',
    metadata: { k: 'v' },
    user: 'u',
    safety_identifier: 's',
    prompt_cache_key: 'p',
  });
});

test("chat's default max tokens: the context left after the prompt, at most 256", () => {
  assert.equal(CHAT_DEFAULT_MAX_TOKENS_CAP, 256);
  assert.equal(chatDefaultMaxTokens(4096, 100), 256);
  assert.equal(chatDefaultMaxTokens(128, 100), 28);
  assert.equal(chatDefaultMaxTokens(128, 128), 0);
});

test('messages: developer is system, text parts are joined with newlines, name is kept', () => {
  const r = ok({
    messages: [
      { role: 'developer', content: 'Be brief.' },
      {
        role: 'user',
        name: 'ann',
        content: [
          { type: 'text', text: 'one' },
          { type: 'text', text: 'two' },
        ],
      },
      { role: 'assistant', content: 'ok' },
    ],
  });
  assert.deepEqual(r.messages, [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'one\ntwo', name: 'ann' },
    { role: 'assistant', content: 'ok' },
  ]);
});

test('chat line errors: each names the parameter or the message, and fails that line only', () => {
  refused({ n: 2 }, 'unsupported_parameter', /^n=2: only n=1/);
  refused({ top_k: 5 }, 'unsupported_parameter', /top_k/);
  refused({ prompt: 'x' }, 'unsupported_parameter', /prompt/);
  refused({ stream: true }, 'unsupported_parameter', /stream/);
  refused({ logprobs: true }, 'unsupported_parameter', /logprobs/);
  refused({ presence_penalty: 0.5 }, 'unsupported_parameter', /presence_penalty/);
  refused({ tools: [{ type: 'function', function: { name: 'f' } }] }, 'unsupported_parameter', /tools/);
  refused({ tool_choice: 'required' }, 'unsupported_parameter', /tool_choice/);
  refused({ response_format: { type: 'json_object' } }, 'unsupported_parameter', /response_format/);
  refused({ modalities: ['text', 'audio'] }, 'unsupported_parameter', /modalities/);
  refused({ reasoning_effort: 'low' }, 'unsupported_parameter', /reasoning_effort/);
  refused({ store: true }, 'unsupported_parameter', /store/);
  refused({ stop: ['a', 'b', 'c', 'd', 'e'] }, 'invalid_request', /stop/);
  refused({ max_tokens: 5, max_completion_tokens: 6 }, 'invalid_request', /disagree/);
  refused({ messages: [] }, 'invalid_request', /messages: at least one message/);
  refused(
    { messages: [{ role: 'tool', content: 'x', tool_call_id: 't' }] },
    'invalid_request',
    /messages\[0\]\.role "tool": only system, developer/,
  );
  refused({ messages: [{ role: 'wizard', content: 'x' }] }, 'invalid_request', /role "wizard"/);
  refused(
    { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x' } }] }] },
    'unsupported_parameter',
    /messages\[0\]\.content\[0\]: part type "image_url" is not supported/,
  );
  refused({ messages: [{ role: 'user', content: [] }] }, 'invalid_request', /content must be a string or a non-empty list/);
  refused({ messages: [{ role: 'user', content: 3 }] }, 'invalid_request', /content must be a string/);
  refused({ messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'x' }] }] }, 'unsupported_parameter', /tool_calls/);
  refused({ messages: [{ role: 'user', content: 'x', colour: 'red' }] }, 'unsupported_parameter', /unknown field "colour"/);
});

test('a native line has a prompt or messages, exactly one', () => {
  const native = (o: Record<string, unknown>) => parseRequestValue({ custom_id: 'n1', model: 'm', ...o }, 1);
  const m = native({ messages: USER, max_new_tokens: 4, do_sample: true, top_k: 5 });
  assert.ok(m.ok);
  assert.equal(m.request.form, 'native');
  assert.deepEqual(m.request.messages, [{ role: 'user', content: 'Hi' }]);
  // native parameters keep Hugging Face's meaning: nothing is set that the line does not give
  assert.deepEqual(m.request.params, { max_new_tokens: 4, do_sample: true, top_k: 5 });
  for (const o of [{ prompt: 'x', messages: USER }, {}]) {
    const p = native(o);
    assert.ok(!p.ok);
    assert.equal(p.counted, true);
    assert.equal(p.error.error.code, 'invalid_request');
    assert.match(p.error.error.message, /exactly one of "prompt" and "messages"/);
  }
  const bad = native({ messages: [{ role: 'user', content: [{ type: 'input_audio' }] }] });
  assert.ok(!bad.ok);
  assert.match(bad.error.error.message, /part type "input_audio"/);
});

function result(form: ResultRecord['form'], finish: ResultRecord['finish_reason'], text = 'Blue.'): ResultRecord {
  return {
    custom_id: 'c1',
    line: 3,
    form,
    model: 'm',
    text,
    token_ids: [1, 2, 3],
    finish_reason: finish,
    prompt_tokens: 9,
    completion_tokens: 3,
    seed: 1,
    key: 'm:p16:n16:greedy',
    worker: 'w',
    created_at: 1000,
    finished_at: 5500,
  };
}

test('the output line of a chat line is an OpenAI batch line whose body is a chat.completion', () => {
  const l = formatResultLine(result('openai_chat', 'eos'), 'b1') as OpenAIChatResultLine;
  assert.match(l.id, /^batch_req_[0-9a-f]{24}$/);
  assert.equal(l.custom_id, 'c1');
  assert.equal(l.error, null);
  assert.equal(l.response.status_code, 200);
  assert.match(l.response.request_id, /^req_/);
  const sid = l.id.slice('batch_req_'.length);
  assert.deepEqual(l.response.body, {
    id: `chatcmpl-${sid}`,
    object: 'chat.completion',
    created: 5,
    model: 'm',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Blue.', refusal: null }, logprobs: null, finish_reason: 'stop' }],
    usage: { prompt_tokens: 9, completion_tokens: 3, total_tokens: 12 },
  });
  assert.equal(
    (formatResultLine(result('openai_chat', 'length'), 'b1') as OpenAIChatResultLine).response.body.choices[0].finish_reason,
    'length',
  );
  // a failed chat line gets an OpenAI error line, a native one with messages the native form
  const failed = formatSettledLine(
    { custom_id: 'c1', error: { line: 3, custom_id: 'c1', error: { code: 'invalid_request', message: 'no template' } } },
    'openai_chat',
    'b1',
  );
  assert.ok(failed && 'response' in failed);
  assert.equal(failed.response.status_code, 400);
  const native = formatResultLine(result('native', 'eos'), 'b1');
  assert.deepEqual(native, {
    custom_id: 'c1',
    text: 'Blue.',
    token_ids: [1, 2, 3],
    finish_reason: 'eos',
    usage: { prompt_tokens: 9, completion_tokens: 3 },
    error: null,
  });
});
