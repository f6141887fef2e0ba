/**
 * Chat requests: the messages of a line checked and normalized for a chat template, and the body
 * of an OpenAI `/v1/chat/completions` line mapped with OpenAI's meaning. As for completions, every
 * parameter of the endpoint is known, and one the engine cannot honour is an error for its line.
 */
import { z } from 'zod';
import { BatchgenError } from './errors.js';
import { LIMITS, overLimit, utf8Bytes } from './limits.js';
import { refusePenalties, openAIParams, unsupported } from './openai-params.js';
import { GenerationParamFields, type GenerationParams, MAX_STOP_STRINGS, MAX_STOP_STRING_CHARS } from './params.js';
import { type ChatMessage, ChatMessagesInput, ModelName } from './schemas.js';

export const OPENAI_CHAT_COMPLETIONS_URL = '/v1/chat/completions';

/**
 * The default max_tokens of a chat line (OpenAI sets none: a chat answer may run to the end of the
 * context): what the context leaves after the prompt, at most this many, so that long contexts do
 * not make every chat line a long generation, and lines of any prompt length share one new-token bucket.
 */
export const CHAT_DEFAULT_MAX_TOKENS_CAP = 256;

/** max_new_tokens of a chat line that gives none: the context left after the prompt, capped (0 or less: the prompt fills it). */
export function chatDefaultMaxTokens(contextLength: number, promptTokens: number): number {
  return Math.min(CHAT_DEFAULT_MAX_TOKENS_CAP, LIMITS.maxNewTokens, contextLength - promptTokens);
}

const ROLES: Record<string, ChatMessage['role']> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

/** Message fields of OpenAI's chat API that a batch line cannot use here (tools, audio, ...). */
const REFUSED_MESSAGE_FIELDS: Record<string, string> = {
  tool_calls: 'tool calls are not supported',
  function_call: 'function calls are not supported',
  tool_call_id: 'tool messages are not supported',
  audio: 'audio is not supported',
  refusal: 'assistant refusals are not supported as input',
};

/**
 * Checks and normalizes a line's messages: roles system, developer (taken as system), user and
 * assistant; content a string or a list of `{type: "text", text}` parts (joined with "\n", as vLLM
 * joins them); `name` kept. Any other role, part type or field is an error naming the message.
 */
export function chatMessages(input: ChatMessagesInput): ChatMessage[] {
  let bytes = 0;
  const out = input.map((m, i): ChatMessage => {
    const at = `messages[${i}]`;
    const role = ROLES[m.role];
    if (!role)
      throw new BatchgenError(
        'invalid_request',
        `${at}.role "${m.role}": only system, developer (taken as system), user and assistant messages are supported`,
      );
    for (const [k, v] of Object.entries(m)) {
      if (k === 'role' || k === 'content' || k === 'name') continue;
      if (k in REFUSED_MESSAGE_FIELDS && v != null) unsupported(`${at}.${k}`, v, REFUSED_MESSAGE_FIELDS[k]);
      if (!(k in REFUSED_MESSAGE_FIELDS)) throw new BatchgenError('unsupported_parameter', `${at}: unknown field "${k}"`);
    }
    if (m.name !== undefined && typeof m.name !== 'string') throw new BatchgenError('invalid_request', `${at}.name must be a string`);
    let content: string;
    if (typeof m.content === 'string') content = m.content;
    else if (Array.isArray(m.content) && m.content.length > 0) {
      content = m.content
        .map((part: unknown, j) => {
          const p = part as { type?: unknown; text?: unknown } | null;
          if (p === null || typeof p !== 'object' || p.type !== 'text') {
            const type = p !== null && typeof p === 'object' ? JSON.stringify(p.type) : JSON.stringify(p);
            throw new BatchgenError(
              'unsupported_parameter',
              `${at}.content[${j}]: part type ${type} is not supported (only {"type": "text", "text": ...} parts)`,
            );
          }
          if (typeof p.text !== 'string' || Object.keys(p).some((k) => k !== 'type' && k !== 'text'))
            throw new BatchgenError('invalid_request', `${at}.content[${j}]: a text part is {"type": "text", "text": <string>}`);
          return p.text;
        })
        .join('\n');
    } else
      throw new BatchgenError('invalid_request', `${at}.content must be a string or a non-empty list of {"type": "text", "text"} parts`);
    bytes += utf8Bytes(content);
    return m.name === undefined ? { role, content } : { role, content, name: m.name };
  });
  if (bytes > LIMITS.maxPromptBytes)
    throw new BatchgenError('invalid_request', overLimit('the messages', bytes, 'bytes', 'maxPromptBytes'));
  return out;
}

const Stop = z
  .union([z.string().min(1).max(MAX_STOP_STRING_CHARS), z.array(z.string().min(1).max(MAX_STOP_STRING_CHARS)).max(MAX_STOP_STRINGS)])
  .nullish();

/**
 * The body of an OpenAI `/v1/chat/completions` request. Every parameter of the endpoint is known
 * here; those the engine cannot honour are accepted only at their neutral value (see fromOpenAIChat).
 */
export const OpenAIChatBody = z
  .object({
    model: ModelName,
    messages: ChatMessagesInput,
    max_tokens: GenerationParamFields.shape.max_new_tokens.nullish(),
    max_completion_tokens: GenerationParamFields.shape.max_new_tokens.nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().gt(0).max(1).nullish(),
    seed: z.number().int().min(0).max(0xffffffff).nullish(),
    stop: Stop,
    n: z.number().int().min(1).nullish(),
    stream: z.boolean().nullish(),
    stream_options: z.unknown().optional(),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.number().int().min(0).nullish(),
    presence_penalty: z.number().nullish(),
    frequency_penalty: z.number().nullish(),
    logit_bias: z.record(z.string(), z.number()).nullish(),
    response_format: z.unknown().optional(),
    tools: z.array(z.unknown()).nullish(),
    tool_choice: z.unknown().optional(),
    parallel_tool_calls: z.boolean().nullish(),
    functions: z.array(z.unknown()).nullish(),
    function_call: z.unknown().optional(),
    modalities: z.array(z.string()).nullish(),
    audio: z.unknown().optional(),
    prediction: z.unknown().optional(),
    reasoning_effort: z.string().nullish(),
    verbosity: z.string().nullish(),
    web_search_options: z.unknown().optional(),
    service_tier: z.string().nullish(),
    store: z.boolean().nullish(),
    /** metadata, end-user ids and cache keys: not generation parameters, accepted and unused */
    metadata: z.record(z.string(), z.string()).nullish(),
    user: z.string().nullish(),
    safety_identifier: z.string().nullish(),
    prompt_cache_key: z.string().nullish(),
  })
  .strict();
export type OpenAIChatBody = z.infer<typeof OpenAIChatBody>;

const empty = (v: unknown) => v == null || (Array.isArray(v) && v.length === 0);

/**
 * Maps an OpenAI chat body to messages and generation parameters, with the completions mapping
 * (openAIParams) for temperature, top_p, seed and stop:
 * - `max_completion_tokens` or `max_tokens` (its older name; both given must agree) →
 *   `max_new_tokens`; neither: left unset, and the producer uses chatDefaultMaxTokens;
 * - `n` only 1; `stream`, `logprobs`, `top_logprobs`, `logit_bias`, penalties, `tools`,
 *   `functions`, `audio`, `prediction`, `reasoning_effort`, `verbosity`, `web_search_options`,
 *   `store` only at their neutral values; `response_format` only `{"type": "text"}`; `modalities`
 *   only `["text"]`; `tool_choice`/`function_call` only "none" or "auto" (there are no tools);
 *   `service_tier` only "auto" or "default".
 */
export function fromOpenAIChat(body: OpenAIChatBody): { messages: ChatMessage[]; params: GenerationParams } {
  if (body.n != null && body.n !== 1)
    unsupported('n', body.n, 'only n=1 is supported (one completion per request line; send one line per completion)');
  if (body.stream) unsupported('stream', body.stream, 'a batch request cannot stream');
  if (body.stream_options != null) unsupported('stream_options', body.stream_options, 'a batch request cannot stream');
  if (body.logprobs) unsupported('logprobs', body.logprobs, 'log probabilities are not returned');
  if (body.top_logprobs != null && body.top_logprobs !== 0)
    unsupported('top_logprobs', body.top_logprobs, 'log probabilities are not returned');
  if (body.logit_bias != null && Object.keys(body.logit_bias).length > 0)
    unsupported('logit_bias', body.logit_bias, 'logit bias is not supported');
  refusePenalties(body);
  const rf = body.response_format as { type?: unknown } | null | undefined;
  if (rf != null && !(typeof rf === 'object' && rf.type === 'text' && Object.keys(rf).length === 1))
    unsupported('response_format', rf, 'only {"type": "text"} (structured output is not supported)');
  if (!empty(body.tools)) unsupported('tools', `[${body.tools!.length} tools]`, 'tools are not supported');
  if (!empty(body.functions)) unsupported('functions', `[${body.functions!.length} functions]`, 'functions are not supported');
  for (const name of ['tool_choice', 'function_call'] as const) {
    const v = body[name];
    if (v != null && v !== 'none' && v !== 'auto') unsupported(name, v, 'there are no tools to call');
  }
  if (body.modalities != null && !(body.modalities.length === 1 && body.modalities[0] === 'text'))
    unsupported('modalities', body.modalities, 'only ["text"]');
  for (const name of ['audio', 'prediction', 'reasoning_effort', 'verbosity', 'web_search_options'] as const) {
    if (body[name] != null) unsupported(name, body[name], 'not supported');
  }
  if (body.store) unsupported('store', body.store, 'completions are not stored');
  if (body.service_tier != null && body.service_tier !== 'auto' && body.service_tier !== 'default')
    unsupported('service_tier', body.service_tier, 'only "auto" or "default"');
  if (body.max_tokens != null && body.max_completion_tokens != null && body.max_tokens !== body.max_completion_tokens)
    throw new BatchgenError(
      'invalid_request',
      `max_tokens ${body.max_tokens} and max_completion_tokens ${body.max_completion_tokens} disagree: give one of them`,
    );
  const max = body.max_completion_tokens ?? body.max_tokens ?? undefined;
  return { messages: chatMessages(body.messages), params: openAIParams(body, max) };
}
