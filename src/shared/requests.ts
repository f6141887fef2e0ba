/**
 * Request lines in, GenerationRequests out: the native form as it is (a prompt, or chat messages),
 * the OpenAI `/v1/completions` and `/v1/chat/completions` forms mapped with OpenAI's meaning. A parameter the engine cannot honour is an error for its line,
 * never silently dropped or changed.
 */
import { BatchgenError, type ErrorCode } from './errors.js';
import { LIMITS, overLimit, utf8Bytes } from './limits.js';
import { chatMessages, fromOpenAIChat, OPENAI_CHAT_COMPLETIONS_URL, OpenAIChatBody } from './openai-chat.js';
import { openAIParams, refusePenalties, unsupported } from './openai-params.js';
import type { GenerationParams } from './params.js';
import {
  NativeRequest,
  OpenAICompletionBody,
  OpenAIRequestLine,
  describeZodError,
  zodErrorCode,
  type ErrorRecord,
  type GenerationRequest,
  type Prompt,
} from './schemas.js';

export const OPENAI_COMPLETIONS_URL = '/v1/completions';
/** OpenAI's default max_tokens for /v1/completions. */
export const OPENAI_DEFAULT_MAX_TOKENS = 16;

/**
 * Maps an OpenAI completion body to generation parameters:
 * - `max_tokens` (default 16) → `max_new_tokens`;
 * - `temperature` (default 1): 0 means greedy, above 0 sampling at that temperature;
 * - `top_p` (default 1) → `top_p`, `seed` → `seed`, `stop` (up to 4 strings of any length) → `stop_strings`;
 * - OpenAI has no top-k, repetition penalty, beams, min_new_tokens or n-gram ban: those are set off
 *   (top_k 0, repetition_penalty 1, num_beams 1, ...), so a model folder's generation_config.json
 *   (Hugging Face's top_k 50 included) never applies to an OpenAI line;
 * - `n` and `best_of`: only 1; `stream`, `echo`, `logprobs`, `suffix`, `logit_bias`,
 *   `presence_penalty`, `frequency_penalty`: only at their neutral values. Anything else is an error.
 */
export function fromOpenAI(body: OpenAICompletionBody): { prompt: Prompt; params: GenerationParams } {
  if (body.n != null && body.n !== 1)
    unsupported('n', body.n, 'only n=1 is supported (one completion per request line; send one line per completion)');
  if (body.best_of != null && body.best_of !== 1) unsupported('best_of', body.best_of, 'only best_of=1 is supported');
  if (body.stream) unsupported('stream', body.stream, 'a batch request cannot stream');
  if (body.stream_options != null) unsupported('stream_options', body.stream_options, 'a batch request cannot stream');
  if (body.echo) unsupported('echo', body.echo, 'echoing the prompt is not supported');
  if (body.logprobs != null) unsupported('logprobs', body.logprobs, 'log probabilities are not returned');
  if (body.suffix != null && body.suffix !== '') unsupported('suffix', body.suffix, 'insertion (suffix) is not supported');
  if (body.logit_bias != null && Object.keys(body.logit_bias).length > 0)
    unsupported('logit_bias', body.logit_bias, 'logit bias is not supported');
  refusePenalties(body);
  let prompt = body.prompt;
  if (Array.isArray(prompt) && prompt.length > 0 && typeof prompt[0] === 'string') {
    if (prompt.length !== 1) unsupported('prompt', `[${prompt.length} prompts]`, 'one prompt per request line');
    prompt = prompt[0] as string;
  }
  return { prompt: prompt as Prompt, params: openAIParams(body, body.max_tokens ?? OPENAI_DEFAULT_MAX_TOKENS) };
}

/** The result of reading one line: a request, or the error record of that line. */
export type ParsedLine =
  | { ok: true; request: GenerationRequest; line: number }
  | {
      ok: false;
      /**
       * Whether the line counts as a request of the batch (it has a custom_id and is JSON):
       * counted lines that fail are `failed` requests; the others are only rejected lines.
       */
      counted: boolean;
      error: ErrorRecord;
    };

function fail(line: number, customId: string | null, counted: boolean, code: ErrorCode, message: string): ParsedLine {
  return { ok: false, counted, error: { line, custom_id: customId, error: { code, message } } };
}

/** Reads an object (already JSON-parsed) in either form. Throws BatchgenError. */
export function requestFromObject(obj: Record<string, unknown>): GenerationRequest {
  if ('url' in obj || 'body' in obj || 'method' in obj) {
    const r = OpenAIRequestLine.safeParse(obj);
    if (!r.success) throw new BatchgenError(zodErrorCode(r.error), `OpenAI batch line: ${describeZodError(r.error)}`);
    const { custom_id, url } = r.data;
    if (url === OPENAI_CHAT_COMPLETIONS_URL) {
      const b = OpenAIChatBody.safeParse(r.data.body);
      if (!b.success) throw new BatchgenError(zodErrorCode(b.error), `body: ${describeZodError(b.error)}`);
      const mapped = fromOpenAIChat(b.data);
      return { custom_id, model: b.data.model, messages: mapped.messages, params: mapped.params, form: 'openai_chat' };
    }
    if (url !== OPENAI_COMPLETIONS_URL) {
      throw new BatchgenError(
        'unsupported_parameter',
        `url "${url}": only ${OPENAI_COMPLETIONS_URL} and ${OPENAI_CHAT_COMPLETIONS_URL} are served`,
      );
    }
    const b = OpenAICompletionBody.safeParse(r.data.body);
    if (!b.success) throw new BatchgenError(zodErrorCode(b.error), `body: ${describeZodError(b.error)}`);
    const mapped = fromOpenAI(b.data);
    return { custom_id, model: b.data.model, prompt: mapped.prompt, params: mapped.params, form: 'openai' };
  }
  const r = NativeRequest.safeParse(obj);
  if (!r.success) throw new BatchgenError(zodErrorCode(r.error), describeZodError(r.error));
  const { custom_id, model, prompt, messages, ...params } = r.data;
  if ((prompt === undefined) === (messages === undefined))
    throw new BatchgenError('invalid_request', 'a native line has exactly one of "prompt" and "messages"');
  if (messages) return { custom_id, model, messages: chatMessages(messages), params, form: 'native' };
  return { custom_id, model, prompt, params, form: 'native' };
}

/**
 * Reads one request given as a value (a JSONL line already parsed, or an SDK object); `line` is its
 * 1-based place in the input. Not an object, or no usable custom_id: a rejected line, not counted.
 * An object with a custom_id that fails its schema or the OpenAI rules: a counted, failed request.
 */
export function parseRequestValue(value: unknown, line: number): ParsedLine {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return fail(line, null, false, 'invalid_request', `line ${line} is not a JSON object`);
  }
  const rec = value as Record<string, unknown>;
  const cid = rec.custom_id;
  if (typeof cid !== 'string' || cid.length === 0 || cid.length > LIMITS.maxCustomIdChars) {
    return fail(
      line,
      typeof cid === 'string' && cid.length <= LIMITS.maxCustomIdChars ? cid : null,
      false,
      'invalid_request',
      typeof cid === 'string' && cid.length > LIMITS.maxCustomIdChars
        ? `line ${line}: ${overLimit('custom_id', cid.length, 'characters', 'maxCustomIdChars')}`
        : `line ${line}: custom_id must be a string of 1 to ${LIMITS.maxCustomIdChars} characters`,
    );
  }
  try {
    return { ok: true, request: requestFromObject(rec), line };
  } catch (e) {
    if (e instanceof BatchgenError) return fail(line, cid, true, e.code, e.message);
    throw e;
  }
}

/** The rejected line of a line longer than the limit (its content was not read). */
export function lineTooLong(line: number, bytes: number): ParsedLine {
  return fail(
    line,
    null,
    false,
    'invalid_request',
    `line ${line}: ${overLimit('the line', bytes, 'bytes', 'maxLineBytes')}; it was not read`,
  );
}

/** The rejected line that is one past the lines a batch may have: the rest of the input is not read. */
export function tooManyLines(line: number): ParsedLine {
  return fail(
    line,
    null,
    false,
    'invalid_request',
    `line ${line}: the input has more than ${LIMITS.maxLinesPerBatch} request lines (maxLinesPerBatch); this line and the rest were not read: split the input into several batches`,
  );
}

/** Reads one JSONL line (1-based `line`): JSON, then parseRequestValue. A line above the byte limit is rejected unparsed. */
export function parseRequestLine(text: string, line: number): ParsedLine {
  if (text.length > LIMITS.maxLineBytes || utf8Bytes(text) > LIMITS.maxLineBytes) return lineTooLong(line, utf8Bytes(text));
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    return fail(line, null, false, 'invalid_request', `line ${line} is not JSON (${(e as Error).message})`);
  }
  return parseRequestValue(obj, line);
}

/** Splits JSONL text into numbered, non-blank lines. */
export function* jsonlLines(text: string): Generator<{ line: number; text: string }> {
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].trim();
    if (t.length > 0) yield { line: i + 1, text: t };
  }
}
