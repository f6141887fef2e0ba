/**
 * A model folder's chat template, found and rendered as transformers' `apply_chat_template` does:
 * `chat_template.jinja` when the folder has it (it wins over tokenizer_config.json, as in
 * transformers' `from_pretrained`), else `chat_template` in tokenizer_config.json (a string, or a
 * list of `{name, template}` of which "default" is taken). Rendered with `@huggingface/jinja`
 * (trim_blocks and lstrip_blocks, as transformers' environment) with `messages`,
 * `add_generation_prompt: true`, `tools` and `documents` set to none, the special tokens of
 * tokenizer_config.json (`bos_token`, `eos_token`, `unk_token`, `pad_token`, ...) and a
 * `raise_exception` that fails the request with the template's own message.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Environment, Interpreter, Template } from '@huggingface/jinja';
import { BatchgenError, ModelFormatError } from '../shared/errors.js';
import type { ChatMessage } from '../shared/schemas.js';
import { readJsonObject } from './json-file.js';

/** The special-token variables transformers passes to a template (its `special_tokens_map`). */
export const SPECIAL_TOKEN_ATTRIBUTES = [
  'bos_token',
  'eos_token',
  'unk_token',
  'sep_token',
  'pad_token',
  'cls_token',
  'mask_token',
] as const;

/** A model's chat template, ready to render. */
export interface ChatTemplate {
  /** where the template came from: `chat_template.jinja` or `tokenizer_config.json` */
  file: string;
  source: string;
  /** the special-token variables the template sees (strings; `additional_special_tokens` a list) */
  tokens: Record<string, string | string[]>;
  /** set when the template cannot be used (@huggingface/jinja cannot parse it, a list without "default"): chat lines are then refused with it */
  parseError: string | null;
  template: Template | null;
}

/** A token in tokenizer_config.json: a string, or an AddedToken object `{content, ...}`. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string')
    return (v as { content: string }).content;
  return null;
}

/** The special-token variables of a tokenizer_config.json object. */
export function specialTokenVariables(config: Record<string, unknown>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k of SPECIAL_TOKEN_ATTRIBUTES) {
    const t = tokenText(config[k]);
    if (t !== null) out[k] = t;
  }
  const extra = config.additional_special_tokens;
  if (Array.isArray(extra)) out.additional_special_tokens = extra.map(tokenText).filter((t): t is string => t !== null);
  return out;
}

/** The template source of a tokenizer_config.json `chat_template` value (null when there is none). */
export function templateFromConfig(value: unknown, file: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value.filter(
      (t): t is { name: string; template: string } =>
        t !== null && typeof t === 'object' && typeof t.name === 'string' && typeof t.template === 'string',
    );
    if (named.length !== value.length) throw new ModelFormatError(file, 'chat_template: a list must hold {name, template} objects');
    const chosen = named.find((t) => t.name === 'default');
    if (!chosen)
      throw new ModelFormatError(
        file,
        `chat_template: ${named.length} named templates (${named.map((t) => t.name).join(', ')}) and none is "default"`,
      );
    return chosen.template;
  }
  throw new ModelFormatError(file, `chat_template must be a string or a list of {name, template}, got ${typeof value}`);
}

/** Builds a ChatTemplate from its source and tokenizer_config.json (a parse failure is kept, not thrown). */
export function chatTemplateOf(source: string, file: string, config: Record<string, unknown>): ChatTemplate {
  try {
    return { file, source, tokens: specialTokenVariables(config), parseError: null, template: new Template(source) };
  } catch (e) {
    return { file, source, tokens: specialTokenVariables(config), parseError: (e as Error).message, template: null };
  }
}

/** The chat template of a model folder, or null when it has none. */
export function loadChatTemplate(dir: string): ChatTemplate | null {
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = readJsonObject(configFile, false) ?? {};
  const jinjaFile = path.join(dir, 'chat_template.jinja');
  if (fs.existsSync(jinjaFile)) return chatTemplateOf(fs.readFileSync(jinjaFile, 'utf-8'), jinjaFile, config);
  // a template that cannot be used fails chat lines only: the model still serves prompts
  let source: string | null;
  try {
    source = templateFromConfig(config.chat_template, configFile);
  } catch (e) {
    return { file: configFile, source: '', tokens: specialTokenVariables(config), parseError: (e as Error).message, template: null };
  }
  return source === null ? null : chatTemplateOf(source, configFile, config);
}

/** Thrown by the template's raise_exception: the template's own message. */
class TemplateRaised extends Error {}

/** Python's range(), as the library's own global. */
function range(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('range() step must not be zero');
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

const MONTHS_LONG = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
];

/** transformers' strftime_now: the local time formatted (%Y %m %d %b %B %H %M %%, as the library's). */
function strftimeNow(format: string): string {
  const d = new Date();
  const pad2 = (n: number) => String(n).padStart(2, '0');
  const parts: Record<string, string> = {
    '%Y': String(d.getFullYear()),
    '%m': pad2(d.getMonth() + 1),
    '%d': pad2(d.getDate()),
    '%b': MONTHS_LONG[d.getMonth()].slice(0, 3),
    '%B': MONTHS_LONG[d.getMonth()],
    '%H': pad2(d.getHours()),
    '%M': pad2(d.getMinutes()),
    '%%': '%',
  };
  return format.replace(/%[YmdbBHM%]/g, (t) => parts[t]);
}

/**
 * The template's variables: the globals Template.render sets, with a raise_exception of our own
 * (Template.render's cannot be replaced, and its plain Error could not be told from a template bug).
 */
function environment(vars: Record<string, unknown>): Environment {
  const env = new Environment();
  const globals: Record<string, unknown> = {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    range,
    strftime_now: strftimeNow,
  };
  for (const [k, v] of Object.entries({ ...globals, ...vars })) env.set(k, v);
  return env;
}

/**
 * Renders the messages with the generation prompt added. Throws BatchgenError `invalid_request`:
 * the template's raise_exception message (its rule for conversations, e.g. roles that must
 * alternate), or any other failure of the template on these messages.
 */
export function renderChat(chat: ChatTemplate, messages: readonly ChatMessage[], model: string): string {
  if (!chat.template) throw new BatchgenError('invalid_request', `model ${model}: its chat template cannot be used: ${chat.parseError}`);
  const env = environment({
    messages: messages.map((m) => ({ ...m })),
    add_generation_prompt: true,
    tools: null,
    documents: null,
    ...chat.tokens,
    raise_exception: (message: unknown) => {
      throw new TemplateRaised(String(message));
    },
  });
  try {
    return new Interpreter(env).run(chat.template.parsed).value as string;
  } catch (e) {
    if (e instanceof TemplateRaised)
      throw new BatchgenError('invalid_request', `the chat template of ${model} refuses these messages: ${e.message}`);
    throw new BatchgenError('invalid_request', `the chat template of ${model} failed on these messages: ${(e as Error).message}`);
  }
}
