/**
 * Chat lines against real model folders (made with makeModel, GPT-2's real tokenizer, special tokens
 * added with the special-token helpers): the rendered prompt's ids, special tokens as single ids,
 * no BOS added to a chat prompt while a plain prompt gets the post-processor's, the refusal of a
 * model without a template, chat's default max tokens, and the text of a chat result.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeModel } from '../../src/compiler/make-model.js';
import { loadModelInfo, type ModelInfo } from '../../src/model/info.js';
import { addChatTemplate, CHATML_TEMPLATE, LLAMA3_TEMPLATE, withBosPostProcessor } from '../../src/model/special-tokens.js';
import { prepareRequest } from '../../src/producer/prepare.js';
import { BatchgenError } from '../../src/shared/errors.js';
import { parseRequestValue } from '../../src/shared/requests.js';
import type { GenerationRequest, JobPayload } from '../../src/shared/schemas.js';
import { resultRecord } from '../../src/worker/results.js';

const IM_START = 50257;
const IM_END = 50258;
let chatml: ModelInfo;
let llama: ModelInfo;
let plain: ModelInfo;

before(async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'batchgen-chat-models-'));
  const small = { layers: 1, heads: 2, embd: 32, positions: 128, vocab: 50262 };
  for (const name of ['chatml', 'llama', 'plain']) await makeModel({ out: path.join(root, name), ...small });
  addChatTemplate(path.join(root, 'chatml'), {
    tokens: [
      { id: IM_START, content: '<|im_start|>' },
      { id: IM_END, content: '<|im_end|>' },
    ],
    template: CHATML_TEMPLATE,
    eos: '<|im_end|>',
  });
  const llamaDir = path.join(root, 'llama');
  addChatTemplate(llamaDir, {
    tokens: ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'].map((content, i) => ({
      id: 50257 + i,
      content,
    })),
    template: LLAMA3_TEMPLATE,
    bos: '<|begin_of_text|>',
    eos: '<|eot_id|>',
  });
  const tokFile = path.join(llamaDir, 'tokenizer.json');
  fs.writeFileSync(tokFile, withBosPostProcessor(fs.readFileSync(tokFile, 'utf-8'), { id: 50257, content: '<|begin_of_text|>' }));
  chatml = await loadModelInfo({ name: 'chatml', dir: path.join(root, 'chatml') });
  llama = await loadModelInfo({ name: 'llama', dir: llamaDir });
  plain = await loadModelInfo({ name: 'plain', dir: path.join(root, 'plain') });
});

function request(line: Record<string, unknown>): GenerationRequest {
  const p = parseRequestValue(line, 1);
  if (!p.ok) assert.fail(p.error.error.message);
  return p.request;
}

const chatLine = (model: string, messages: unknown[], body: Record<string, unknown> = {}) =>
  request({ custom_id: 'c', method: 'POST', url: '/v1/chat/completions', body: { model, messages, ...body } });

test('a ChatML prompt: <|im_start|> and <|im_end|> are single ids, nothing else added', async () => {
  const prep = await prepareRequest(
    chatLine('chatml', [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ]),
    chatml,
  );
  const enc = (s: string) => chatml.tokenizer.encode(s);
  assert.deepEqual(await enc('\n'), [198]);
  // the rendered text split at its special tokens, the pieces encoded as plain text
  const expected = [
    IM_START,
    ...(await enc('system\nBe brief.')),
    IM_END,
    198,
    IM_START,
    ...(await enc('user\nHi')),
    IM_END,
    198,
    IM_START,
    ...(await enc('assistant\n')),
  ];
  assert.deepEqual(prep.promptIds, expected);
  assert.equal(prep.promptIds.filter((id) => id === IM_START).length, 3);
  // the template's EOS ends the assistant's turn
  assert.ok(prep.params.stop_ids.includes(IM_END));
  // no max_tokens: the context left after the prompt (128 positions, below the cap of 256)
  assert.equal(prep.params.max_new_tokens, 128 - expected.length);
  assert.equal(prep.params.top_k, 0);
  assert.equal(
    (await prepareRequest(chatLine('chatml', [{ role: 'user', content: 'Hi' }], { max_tokens: 8 }), chatml)).params.max_new_tokens,
    8,
  );
});

test('GPT-2 plain prompts keep their ids: the ByteLevel post-processor adds nothing', async () => {
  for (const m of [chatml, plain]) {
    const prep = await prepareRequest(request({ custom_id: 'p', model: m.name, prompt: 'TensorFlow is' }), m);
    assert.deepEqual(prep.promptIds, [51, 22854, 37535, 318]);
  }
});

test('Llama 3: a plain prompt gets the post-processor BOS, a chat prompt only the template one', async () => {
  const p = await prepareRequest(request({ custom_id: 'p', model: 'llama', prompt: 'TensorFlow is' }), llama);
  assert.deepEqual(p.promptIds, [50257, 51, 22854, 37535, 318]);
  const c = await prepareRequest(request({ custom_id: 'c', model: 'llama', messages: [{ role: 'user', content: 'Hi' }] }), llama);
  const enc = (s: string) => llama.tokenizer.encode(s, { addSpecialTokens: false });
  assert.deepEqual(c.promptIds, [
    50257,
    50258,
    ...(await enc('user')),
    50259,
    ...(await enc('\n\nHi')),
    50260,
    50258,
    ...(await enc('assistant')),
    50259,
    ...(await enc('\n\n')),
  ]);
  assert.equal(c.promptIds.filter((id) => id === 50257).length, 1);
  // a native chat line keeps native defaults: max_new_tokens 16 (Hugging Face's), not chat's
  assert.equal(c.params.max_new_tokens, 16);
  assert.ok(c.params.stop_ids.includes(50260));
});

test('a model without a chat template refuses chat lines, and only them', async () => {
  await assert.rejects(
    prepareRequest(chatLine('plain', [{ role: 'user', content: 'Hi' }]), plain),
    (e: unknown) => e instanceof BatchgenError && e.code === 'invalid_request' && /model plain has no chat template/.test(e.message),
  );
  await assert.rejects(
    prepareRequest(request({ custom_id: 'n', model: 'plain', messages: [{ role: 'user', content: 'Hi' }] }), plain),
    /no chat template/,
  );
});

test('a chat whose prompt fills the context is context_length_exceeded', async () => {
  const long = Array.from({ length: 130 }, () => 'word').join(' ');
  await assert.rejects(
    prepareRequest(chatLine('chatml', [{ role: 'user', content: long }]), chatml),
    (e: unknown) => e instanceof BatchgenError && e.code === 'context_length_exceeded',
  );
});

test('a chat result: the EOS <|im_end|> ends it, is left out of the text, and special tokens never show', async () => {
  const prep = await prepareRequest(chatLine('chatml', [{ role: 'user', content: 'Hi' }], { max_tokens: 8, temperature: 0 }), chatml);
  const payload: JobPayload = {
    v: 1,
    batch_id: 'b',
    custom_id: 'c',
    line: 1,
    form: 'openai_chat',
    model: 'chatml',
    key: prep.keyId,
    prompt_ids: prep.promptIds,
    params: prep.params,
    created_at: 1,
  };
  const blue = await chatml.tokenizer.encode(' Blue');
  const rec = await resultRecord(
    payload,
    { tokenIds: [IM_START, ...blue, IM_END], finishReason: 'eos' },
    (ids) => chatml.tokenizer.decode(ids),
    {
      worker: 'w',
      deliveries: 1,
    },
  );
  assert.equal(rec.text, ' Blue');
  assert.equal(rec.form, 'openai_chat');
  assert.equal(rec.prompt_tokens, prep.promptIds.length);
  assert.equal(rec.completion_tokens, blue.length + 2);
});
