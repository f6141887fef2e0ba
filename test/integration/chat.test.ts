/**
 * Chat lines end to end, with a real redis-server and a real worker process (wasm compiler): a
 * batch that mixes OpenAI chat, OpenAI completion, native chat and native prompt lines of one
 * compile key runs on one queue and in one batch, and each line's output has its own form; a chat
 * line for a model without a template fails alone; `client.chat()` returns a chat.completion.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { makeModel } from '../../src/compiler/make-model.js';
import { loadModelInfo } from '../../src/model/info.js';
import { addChatTemplate, CHATML_TEMPLATE } from '../../src/model/special-tokens.js';
import { GenerationClient } from '../../src/producer/client.js';
import { prepareRequest } from '../../src/producer/prepare.js';
import { BatchgenError } from '../../src/shared/errors.js';
import { parseRequestValue } from '../../src/shared/requests.js';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { runCli, spawnWorker, type WorkerProcess } from '../helpers/processes.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let redis: RedisServer;
let tmp: string;
let chatDir: string;
let plainDir: string;
const workers: WorkerProcess[] = [];

before(async () => {
  if (skip) return;
  tmp = mkdtempSync(join(tmpdir(), 'batchgen-chat-e2e-'));
  chatDir = join(tmp, 'chat');
  plainDir = join(tmp, 'plain');
  const small = { layers: 1, heads: 2, embd: 32, positions: 128, vocab: 50260, seed: 3 };
  await makeModel({ out: chatDir, ...small });
  await makeModel({ out: plainDir, ...small });
  addChatTemplate(chatDir, {
    tokens: [
      { id: 50257, content: '<|im_start|>' },
      { id: 50258, content: '<|im_end|>' },
    ],
    template: CHATML_TEMPLATE,
    eos: '<|im_end|>',
  });
  redis = await startRedisServer();
});

after(async () => {
  for (const w of workers) await w.stop();
  await redis?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const chatLine = (id: string, model: string, content: string) => ({
  custom_id: id,
  method: 'POST',
  url: '/v1/chat/completions',
  body: { model, messages: [{ role: 'user', content }], max_completion_tokens: 8, temperature: 0 },
});

test('a mixed batch of chat and completion lines of one key: one queue, one batch, each output in its form', {
  skip,
  timeout: 300_000,
}, async () => {
  const requests: Record<string, unknown>[] = [
    chatLine('chat-1', 'chat', 'Hi'),
    chatLine('chat-2', 'chat', 'Name a color.'),
    {
      custom_id: 'cmpl-1',
      method: 'POST',
      url: '/v1/completions',
      body: { model: 'chat', prompt: 'TensorFlow is', max_tokens: 8, temperature: 0 },
    },
    {
      custom_id: 'cmpl-2',
      method: 'POST',
      url: '/v1/completions',
      body: { model: 'chat', prompt: 'Redis keeps', max_tokens: 8, temperature: 0 },
    },
    {
      custom_id: 'native-chat',
      model: 'chat',
      messages: [{ role: 'user', content: 'Hello there' }],
      max_new_tokens: 8,
    },
    { custom_id: 'native-prompt', model: 'chat', prompt: 'A queue of prompts', max_new_tokens: 8 },
    chatLine('no-template', 'plain', 'Hi'),
  ];
  const client = await GenerationClient.connect({
    redisUrl: redis.url,
    prefix: 'chat',
    models: [
      { name: 'chat', dir: chatDir },
      { name: 'plain', dir: plainDir },
    ],
    logger: pino({ level: 'silent' }),
  });
  try {
    // enqueued before the worker starts, so that its first batch can take every job
    const h = await client.submitBatch(requests, { batchId: 'mixed-chat' });
    const rep = h.report!;
    assert.equal(rep.enqueued, 6);
    assert.equal(rep.failedValidation, 1);
    assert.deepEqual(rep.keys, ['chat:p16:n16:greedy']);
    assert.equal(rep.errors[0].custom_id, 'no-template');
    assert.equal(rep.errors[0].error.code, 'invalid_request');
    assert.match(rep.errors[0].error.message, /model plain has no chat template/);

    const w = spawnWorker(redis.url, [`chat=${chatDir}`], ['--prefix', 'chat', '--id', 'cw1', '--max-wait-ms', '200']);
    workers.push(w);
    const rec = await h.wait({ timeoutMs: 240_000, pollMs: 200 });
    assert.deepEqual([rec.counts.total, rec.counts.completed, rec.counts.failed], [7, 6, 1]);
    assert.deepEqual(rec.endpoints, ['/v1/chat/completions', '/v1/completions']);

    // one batch ran the six jobs: chat and completion lines side by side
    const batches = w.logs.filter((l) => l.msg === 'batch started');
    assert.equal(batches.length, 1, JSON.stringify(batches));
    assert.equal(batches[0].rows, 6);
    assert.deepEqual(
      [...(batches[0].jobs as string[])].sort(),
      ['chat-1', 'chat-2', 'cmpl-1', 'cmpl-2', 'native-chat', 'native-prompt'].map((c) => `mixed-chat/${c}`),
    );

    const stored = new Map<string, { token_ids: number[]; prompt_tokens: number; text: string }>();
    for await (const r of h.results()) stored.set(r.custom_id, r);
    const out = join(tmp, 'results.jsonl');
    const cli = runCli(['results', 'mixed-chat', '--out', out, '--order', 'input', '--redis', redis.url, '--prefix', 'chat']);
    assert.equal(cli.code, 0, cli.stderr);
    const lines = readFileSync(out, 'utf-8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      lines.map((l) => l.custom_id),
      ['chat-1', 'chat-2', 'cmpl-1', 'cmpl-2', 'native-chat', 'native-prompt', 'no-template'],
    );
    const info = await loadModelInfo({ name: 'chat', dir: chatDir });
    for (const l of lines.slice(0, 2)) {
      const body = l.response.body;
      assert.equal(body.object, 'chat.completion');
      assert.match(body.id, /^chatcmpl-/);
      assert.equal(body.choices.length, 1);
      const choice = body.choices[0];
      assert.equal(choice.index, 0);
      assert.equal(choice.message.role, 'assistant');
      assert.equal(choice.message.refusal, null);
      assert.equal(choice.logprobs, null);
      assert.ok(['stop', 'length'].includes(choice.finish_reason));
      assert.ok(!choice.message.content.includes('<|im_'), choice.message.content);
      // usage: the rendered template's tokens, and the generated ones
      const p = parseRequestValue(requests[lines.indexOf(l)], 1);
      assert.ok(p.ok);
      const prep = await prepareRequest(p.request, info);
      const s = stored.get(l.custom_id)!;
      assert.equal(body.usage.prompt_tokens, prep.promptIds.length);
      assert.equal(s.prompt_tokens, prep.promptIds.length);
      assert.equal(body.usage.completion_tokens, s.token_ids.length);
      assert.equal(body.usage.total_tokens, prep.promptIds.length + s.token_ids.length);
      assert.equal(choice.message.content, s.text);
    }
    for (const l of lines.slice(2, 4)) assert.equal(l.response.body.object, 'text_completion');
    for (const l of lines.slice(4, 6)) {
      assert.ok(Array.isArray(l.token_ids) && typeof l.text === 'string' && l.error === null, JSON.stringify(l));
      assert.equal(l.response, undefined);
    }
    assert.equal(lines[6].response.status_code, 400);
    assert.equal(lines[6].error.code, 'invalid_request');

    // the SDK's chat(): a chat.completion for one request; a model without a template is refused
    const c = await client.chat(
      { model: 'chat', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, temperature: 0 },
      { timeoutMs: 120_000 },
    );
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.model, 'chat');
    assert.ok(c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 4);
    // greedy: the same answer as the batch's chat-1 line (same messages), cut at 4 tokens
    const first = stored.get('chat-1')!;
    assert.equal(c.usage.prompt_tokens, first.prompt_tokens);
    assert.equal(
      c.choices[0].message.content,
      await info.tokenizer.decode(first.token_ids.slice(0, c.usage.completion_tokens).filter((id) => id < 50257)),
    );
    await assert.rejects(
      client.chat({ model: 'plain', messages: [{ role: 'user', content: 'Hi' }] }),
      (e: unknown) => e instanceof BatchgenError && e.code === 'invalid_request' && /no chat template/.test(e.message),
    );
    await w.stop();
    assert.equal((await w.exited).code, 0);
  } finally {
    await client.close();
  }
});

test('plan-buckets counts a chat line by its rendered template', { skip, timeout: 120_000 }, async () => {
  const info = await loadModelInfo({ name: 'chat', dir: chatDir });
  const chat = {
    custom_id: 'c',
    model: 'chat',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ],
  };
  const p = parseRequestValue(chat, 1);
  assert.ok(p.ok);
  const rendered = (await prepareRequest(p.request, info)).promptIds.length;
  assert.ok(rendered > 10, `${rendered} tokens: the template adds its markers to the 4 tokens of content`);
  const file = join(tmp, 'plan.jsonl');
  const lines = [chat, chatLine('o', 'chat', 'Hi'), { custom_id: 'p', model: 'chat', prompt: 'TensorFlow is' }];
  writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n'));
  const r = runCli(['plan-buckets', file, '--model', chatDir, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const plan = JSON.parse(r.stdout);
  assert.equal(plan.prompts, 3);
  assert.equal(plan.skipped_lines, 0);
  assert.equal(plan.max, rendered);
  assert.equal(plan.min, 4);
  // a chat line for a folder without a template is skipped, as submit would fail it
  const r2 = runCli(['plan-buckets', file, '--model', plainDir, '--json']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.deepEqual([JSON.parse(r2.stdout).prompts, JSON.parse(r2.stdout).skipped_lines], [1, 2]);
});
