/**
 * Special tokens and chat templates for model folders that are made, not downloaded: pure
 * functions on tokenizer.json text and tokenizer_config.json fields, and one writer that merges
 * them into a folder. `CHATML_TEMPLATE` and `LLAMA3_TEMPLATE` are the two chat formats the tests
 * and the demo use.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readJsonObject } from './json-file.js';

/**
 * ChatML as Qwen2.5-Instruct's template writes it for system, user and assistant messages, without
 * its tool branches and without a default system message (a conversation without a system message
 * is rendered without one).
 */
export const CHATML_TEMPLATE = `{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system") or (message.role == "assistant") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- else %}
        {{- raise_exception('Only system, user and assistant roles are supported') }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
`;

/** The special tokens of CHATML_TEMPLATE. */
export const CHATML_TOKENS = ['<|im_start|>', '<|im_end|>'] as const;

/** Meta Llama 3 Instruct's template: BOS first, a header per message, each message ended by <|eot_id|>. */
export const LLAMA3_TEMPLATE =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/** The special tokens of LLAMA3_TEMPLATE. */
export const LLAMA3_TOKENS = ['<|begin_of_text|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'] as const;

export interface SpecialToken {
  id: number;
  content: string;
}

/**
 * tokenizer.json with the tokens in `added_tokens` (special: true, matched whole, never split),
 * replacing any entry with the same id or content. The ids should exist in the model's embedding
 * (config.json vocab_size above them).
 */
export function withSpecialTokens(tokenizerJson: string, tokens: readonly SpecialToken[]): string {
  const doc = JSON.parse(tokenizerJson) as { added_tokens?: Record<string, unknown>[] };
  const ids = new Set(tokens.map((t) => t.id));
  const contents = new Set(tokens.map((t) => t.content));
  const kept = (doc.added_tokens ?? []).filter((t) => !ids.has(t.id as number) && !contents.has(t.content as string));
  const added = tokens.map((t) => ({
    id: t.id,
    content: t.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  doc.added_tokens = [...kept, ...added].sort((a, b) => (a.id as number) - (b.id as number));
  return JSON.stringify(doc);
}

/**
 * tokenizer.json whose post-processor adds `bos` before every encoded text (Hugging Face's
 * TemplateProcessing, as Llama's tokenizer.json has it): a plain prompt then starts with BOS.
 */
export function withBosPostProcessor(tokenizerJson: string, bos: SpecialToken): string {
  const doc = JSON.parse(tokenizerJson) as Record<string, unknown>;
  doc.post_processor = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: bos.content, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [
      { SpecialToken: { id: bos.content, type_id: 0 } },
      { Sequence: { id: 'A', type_id: 0 } },
      { SpecialToken: { id: bos.content, type_id: 1 } },
      { Sequence: { id: 'B', type_id: 1 } },
    ],
    special_tokens: { [bos.content]: { id: bos.content, ids: [bos.id], tokens: [bos.content] } },
  };
  return JSON.stringify(doc);
}

export interface ChatConfigFields {
  chatTemplate: string;
  bosToken?: string;
  eosToken?: string;
}

/** tokenizer_config.json fields for a chat model: `chat_template`, `bos_token`, `eos_token`. */
export function chatConfigFields(f: ChatConfigFields): Record<string, string> {
  return {
    chat_template: f.chatTemplate,
    ...(f.bosToken === undefined ? {} : { bos_token: f.bosToken }),
    ...(f.eosToken === undefined ? {} : { eos_token: f.eosToken }),
  };
}

/** Merges fields into a folder's tokenizer_config.json (created when missing). */
export function writeTokenizerConfig(dir: string, fields: Record<string, unknown>): void {
  const file = path.join(dir, 'tokenizer_config.json');
  const current = readJsonObject(file, false) ?? {};
  fs.writeFileSync(file, `${JSON.stringify({ ...current, ...fields }, null, 2)}\n`);
}

/**
 * Makes a folder chat-ready: adds the special tokens to its tokenizer.json, writes the template and
 * the BOS/EOS tokens to tokenizer_config.json, and adds the EOS token's id to generation_config.json's
 * `eos_token_id` (so that generation stops at the end of the assistant's turn).
 */
export function addChatTemplate(
  dir: string,
  opts: { tokens: readonly SpecialToken[]; template: string; bos?: string; eos?: string },
): void {
  const tokFile = path.join(dir, 'tokenizer.json');
  fs.writeFileSync(tokFile, withSpecialTokens(fs.readFileSync(tokFile, 'utf-8'), opts.tokens));
  writeTokenizerConfig(dir, chatConfigFields({ chatTemplate: opts.template, bosToken: opts.bos, eosToken: opts.eos }));
  const eosId = opts.tokens.find((t) => t.content === opts.eos)?.id;
  if (eosId === undefined) return;
  const genFile = path.join(dir, 'generation_config.json');
  const gen = readJsonObject(genFile, false) ?? {};
  const old = gen.eos_token_id;
  const ids = old === undefined || old === null ? [] : Array.isArray(old) ? old : [old];
  gen.eos_token_id = [...new Set([...ids, eosId])];
  fs.writeFileSync(genFile, `${JSON.stringify(gen, null, 2)}\n`);
}
