/**
 * Chat templates rendered as transformers' apply_chat_template renders them (the expected strings
 * are written out from each template's rules), where a folder's template comes from, and the
 * special-token helpers that make a folder chat-ready.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chatTemplateOf, loadChatTemplate, renderChat, specialTokenVariables } from '../../src/model/chat-template.js';
import {
  CHATML_TEMPLATE,
  LLAMA3_TEMPLATE,
  chatConfigFields,
  withBosPostProcessor,
  withSpecialTokens,
} from '../../src/model/special-tokens.js';
import { BatchgenError } from '../../src/shared/errors.js';
import type { ChatMessage } from '../../src/shared/schemas.js';

const CONVERSATION: ChatMessage[] = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Hi' },
  { role: 'assistant', content: 'Hello.' },
  { role: 'user', content: 'Name a color.' },
];

const render = (source: string, messages: ChatMessage[], config: Record<string, unknown> = {}) =>
  renderChat(chatTemplateOf(source, 'tokenizer_config.json', config), messages, 'm');

test('ChatML: system, user, assistant, user, then the generation prompt', () => {
  assert.equal(
    render(CHATML_TEMPLATE, CONVERSATION),
    '<|im_start|>system\nYou are terse.<|im_end|>\n' +
      '<|im_start|>user\nHi<|im_end|>\n' +
      '<|im_start|>assistant\nHello.<|im_end|>\n' +
      '<|im_start|>user\nName a color.<|im_end|>\n' +
      '<|im_start|>assistant\n',
  );
  // no default system message: a lone user message is rendered alone
  assert.equal(render(CHATML_TEMPLATE, [{ role: 'user', content: 'Hi' }]), '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
});

test('Llama 3: bos_token first, a header per message, content trimmed, <|eot_id|> after each', () => {
  const config = { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' };
  assert.equal(
    render(LLAMA3_TEMPLATE, [CONVERSATION[0], { role: 'user', content: '  Hi \n' }, CONVERSATION[2], CONVERSATION[3]], config),
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\n',
  );
});

test('bos_token and eos_token come from tokenizer_config.json, as strings or AddedToken objects', () => {
  const zephyr =
    "{% for message in messages %}{{ bos_token + '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
  const config = { bos_token: '<s>', eos_token: { content: '</s>', lstrip: false, normalized: false, rstrip: false, single_word: false } };
  assert.equal(render(zephyr, [{ role: 'user', content: 'Hi' }], config), '<s><|user|>\nHi</s>\n<|assistant|>\n');
  assert.deepEqual(specialTokenVariables({ ...config, pad_token: null, unk_token: { content: '<unk>' } }), {
    bos_token: '<s>',
    eos_token: '</s>',
    unk_token: '<unk>',
  });
});

test('tools and documents are none, as transformers passes them', () => {
  assert.equal(render('{% if tools is not none %}T{% else %}N{% endif %}{% if documents is none %}D{% endif %}', CONVERSATION), 'ND');
});

test("raise_exception fails the request with the template's own message", () => {
  const alternating =
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ message['content'] }}{% endfor %}";
  assert.equal(
    render(alternating, [
      { role: 'user', content: 'a' },
      { role: 'assistant', content: 'b' },
    ]),
    'ab',
  );
  assert.throws(
    () =>
      render(alternating, [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ]),
    (e: unknown) =>
      e instanceof BatchgenError &&
      e.code === 'invalid_request' &&
      e.message === 'the chat template of m refuses these messages: Conversation roles must alternate user/assistant/user/assistant/...',
  );
});

test('a template that cannot be parsed refuses chat requests with the parser error', () => {
  const t = chatTemplateOf('{% for m in messages %}', 'chat_template.jinja', {});
  assert.ok(t.parseError);
  assert.throws(
    () => renderChat(t, CONVERSATION, 'm'),
    (e: unknown) => e instanceof BatchgenError && e.code === 'invalid_request' && e.message.includes('cannot be used: '),
  );
});

test('where a folder template comes from: chat_template.jinja wins, a list gives its "default", none is null', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'batchgen-chat-'));
  assert.equal(loadChatTemplate(dir), null);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '</s>' }));
  assert.equal(loadChatTemplate(dir), null);
  fs.writeFileSync(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify({
      chat_template: [
        { name: 'tool_use', template: 'TOOLS' },
        { name: 'default', template: 'DEFAULT {{ eos_token }}' },
      ],
      eos_token: '</s>',
    }),
  );
  assert.equal(renderChat(loadChatTemplate(dir)!, CONVERSATION, 'm'), 'DEFAULT </s>');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: [{ name: 'tool_use', template: 'T' }] }));
  // unusable: chat lines are refused with the reason, the folder still loads
  assert.throws(
    () => renderChat(loadChatTemplate(dir)!, CONVERSATION, 'm'),
    (e: unknown) => e instanceof BatchgenError && e.code === 'invalid_request' && /cannot be used: .*none is "default"/.test(e.message),
  );
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: 'CONFIG', eos_token: '</s>' }));
  assert.equal(renderChat(loadChatTemplate(dir)!, CONVERSATION, 'm'), 'CONFIG');
  fs.writeFileSync(path.join(dir, 'chat_template.jinja'), 'FILE {{ eos_token }}');
  const t = loadChatTemplate(dir)!;
  assert.equal(t.file, path.join(dir, 'chat_template.jinja'));
  assert.equal(renderChat(t, CONVERSATION, 'm'), 'FILE </s>');
});

test('withSpecialTokens adds special added_tokens (replacing same ids), withBosPostProcessor a TemplateProcessing', () => {
  const base = JSON.stringify({ added_tokens: [{ id: 5, content: '<|old|>', special: true }], model: { type: 'BPE' } });
  const doc = JSON.parse(
    withSpecialTokens(base, [
      { id: 7, content: '<|im_end|>' },
      { id: 5, content: '<|im_start|>' },
    ]),
  );
  assert.deepEqual(
    doc.added_tokens.map((t: { id: number; content: string; special: boolean }) => [t.id, t.content, t.special]),
    [
      [5, '<|im_start|>', true],
      [7, '<|im_end|>', true],
    ],
  );
  const pp = JSON.parse(withBosPostProcessor(base, { id: 9, content: '<s>' })).post_processor;
  assert.equal(pp.type, 'TemplateProcessing');
  assert.deepEqual(pp.special_tokens['<s>'].ids, [9]);
  assert.deepEqual(chatConfigFields({ chatTemplate: 'X', eosToken: '<|im_end|>' }), { chat_template: 'X', eos_token: '<|im_end|>' });
});
