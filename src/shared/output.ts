/**
 * Result lines in the form of their request: the native form gets
 * `{custom_id, text, token_ids, finish_reason, usage, error}`, an OpenAI line gets an OpenAI batch
 * output line whose body is a `text_completion` object, or a `chat.completion` object for a
 * `/v1/chat/completions` line.
 */
import { createHash } from 'node:crypto';
import type { BatchRecord } from './batch-store.js';
import { type ErrorRecord, isOpenAIForm, type RequestForm, type ResultRecord } from './schemas.js';

export interface NativeResultLine {
  custom_id: string;
  text: string;
  token_ids: number[];
  finish_reason: 'eos' | 'stop' | 'length';
  usage: { prompt_tokens: number; completion_tokens: number };
  /** the seed the row was sampled with (only for sampled requests) */
  seed?: number;
  error: null;
}

export interface OpenAICompletion {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: { text: string; index: number; logprobs: null; finish_reason: 'stop' | 'length' }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

export interface OpenAIChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: {
    index: number;
    message: { role: 'assistant'; content: string; refusal: null };
    logprobs: null;
    finish_reason: 'stop' | 'length';
  }[];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

export interface OpenAIResultLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: OpenAICompletion };
  error: null;
}

/** The output line of a `/v1/chat/completions` line: its body is a `chat.completion`. */
export interface OpenAIChatResultLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: OpenAIChatCompletion };
  error: null;
}

/** A short stable id derived from parts (so that exporting twice gives the same ids). */
function stableId(...parts: (string | number)[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 24);
}

/** OpenAI's finish reasons: an EOS, stop id or stop string is `stop`, the token limit is `length`. */
export function openAIFinishReason(r: 'eos' | 'stop' | 'length'): 'stop' | 'length' {
  return r === 'length' ? 'length' : 'stop';
}

/** The fields of a native result line that come from the stored result. */
export function nativeResultFields(r: ResultRecord): Omit<NativeResultLine, 'error'> {
  return {
    custom_id: r.custom_id,
    text: r.text,
    token_ids: r.token_ids,
    finish_reason: r.finish_reason,
    usage: { prompt_tokens: r.prompt_tokens, completion_tokens: r.completion_tokens },
  };
}

/** Whether a result was sampled (its compile key's strategy is `sample`), so that its seed matters. */
function wasSampled(r: ResultRecord): boolean {
  return r.key.split(':').pop() === 'sample';
}

export function formatResultLine(r: ResultRecord, batchId: string): NativeResultLine | OpenAIResultLine | OpenAIChatResultLine {
  if (r.form === 'native') return { ...nativeResultFields(r), ...(wasSampled(r) ? { seed: r.seed } : {}), error: null };
  const sid = stableId(batchId, r.custom_id);
  const created = Math.floor(r.finished_at / 1000);
  const finish_reason = openAIFinishReason(r.finish_reason);
  const usage = {
    prompt_tokens: r.prompt_tokens,
    completion_tokens: r.completion_tokens,
    total_tokens: r.prompt_tokens + r.completion_tokens,
  };
  // The envelope (its keys in OpenAI's order) around the endpoint's body.
  const line = <B>(body: B) => ({
    id: `batch_req_${sid}`,
    custom_id: r.custom_id,
    response: { status_code: 200 as const, request_id: `req_${sid}`, body },
    error: null,
  });
  if (r.form === 'openai_chat') {
    const message = { role: 'assistant' as const, content: r.text, refusal: null };
    return line({
      id: `chatcmpl-${sid}`,
      object: 'chat.completion' as const,
      created,
      model: r.model,
      choices: [{ index: 0, message, logprobs: null, finish_reason }],
      usage,
    });
  }
  return line({
    id: `cmpl-${sid}`,
    object: 'text_completion' as const,
    created,
    model: r.model,
    choices: [{ text: r.text, index: 0, logprobs: null, finish_reason }],
    usage,
  });
}

/**
 * An OpenAI batch output line for a failed request, as OpenAI writes one: the response carries the
 * HTTP-style error body (400 for a request the engine refuses, 500 for a failure while generating),
 * and `error` repeats its code and message.
 */
export interface OpenAIErrorLine {
  id: string;
  custom_id: string;
  response: {
    status_code: number;
    request_id: string;
    body: { error: { message: string; type: 'invalid_request_error' | 'server_error'; param: null; code: string } };
  };
  error: { code: string; message: string };
}

const SERVER_ERROR_CODES = new Set(['generation_failed', 'invalid_payload', 'shape_mismatch', 'model_format']);

export function formatOpenAIErrorLine(e: ErrorRecord & { custom_id: string }, batchId: string): OpenAIErrorLine {
  const sid = stableId(batchId, e.custom_id);
  const server = SERVER_ERROR_CODES.has(e.error.code);
  return {
    id: `batch_req_${sid}`,
    custom_id: e.custom_id,
    response: {
      status_code: server ? 500 : 400,
      request_id: `req_${sid}`,
      body: {
        error: { message: e.error.message, type: server ? 'server_error' : 'invalid_request_error', param: null, code: e.error.code },
      },
    },
    error: { code: e.error.code, message: e.error.message },
  };
}

/**
 * The output-file line of a settled request: its result line, or for a failed OpenAI-form request an
 * OpenAI error line; null for a failed native request (it is only in the errors file).
 */
export function formatSettledLine(
  s: { custom_id: string; result?: ResultRecord; error?: ErrorRecord },
  form: RequestForm | undefined,
  batchId: string,
): NativeResultLine | OpenAIResultLine | OpenAIChatResultLine | OpenAIErrorLine | null {
  if (s.result) return formatResultLine(s.result, batchId);
  if (s.error && isOpenAIForm(form)) return formatOpenAIErrorLine({ ...s.error, custom_id: s.custom_id }, batchId);
  return null;
}

/** An errors-file line: `{line, custom_id, error: {code, message}}`. */
export function formatErrorLine(e: ErrorRecord): ErrorRecord {
  return { line: e.line, custom_id: e.custom_id, error: { code: e.error.code, message: e.error.message } };
}

/** A batch record as an OpenAI-style batch object (timestamps in seconds, as OpenAI's). */
export interface OpenAIBatchObject {
  id: string;
  object: 'batch';
  endpoint: string;
  input_file_id: string;
  status: string;
  created_at: number;
  in_progress_at: number | null;
  completed_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  failed_at: number | null;
  expires_at: number | null;
  request_counts: { total: number; completed: number; failed: number };
  /** the results file a `submit --wait` wrote (a path: there is no files API), else null */
  output_file_id: string | null;
  error_file_id: string | null;
  /** the errors found in the input (rejected lines, requests that failed validation), as OpenAI lists them */
  errors: { object: 'list'; data: { code: string; line: number | null; message: string; param: string | null }[] } | null;
  metadata: { cancelled: string; rejected_lines: string };
}

/**
 * The batch object's endpoint: the endpoint of its requests, or the endpoints joined by ", " when the
 * lines mix them (OpenAI's batches have one); `/v1/completions` when none was recorded.
 */
export function batchEndpoint(endpoints: readonly string[] | undefined): string {
  return endpoints?.length ? endpoints.join(', ') : '/v1/completions';
}

const secs = (ms: number | null): number | null => (ms === null ? null : Math.floor(ms / 1000));

export function toOpenAIBatch(r: BatchRecord, inputErrors: readonly ErrorRecord[] = []): OpenAIBatchObject {
  return {
    id: r.id,
    object: 'batch',
    endpoint: batchEndpoint(r.endpoints),
    input_file_id: r.input,
    status: r.status,
    created_at: secs(r.created_at)!,
    in_progress_at: secs(r.in_progress_at),
    completed_at: secs(r.completed_at),
    cancelling_at: secs(r.cancelling_at),
    cancelled_at: secs(r.cancelled_at),
    failed_at: secs(r.failed_at),
    expires_at: secs(r.expires_at),
    request_counts: { total: r.counts.total, completed: r.counts.completed, failed: r.counts.failed },
    output_file_id: r.output_file ?? null,
    error_file_id: r.error_file ?? null,
    errors: inputErrors.length
      ? { object: 'list', data: inputErrors.map((e) => ({ code: e.error.code, line: e.line, message: e.error.message, param: null })) }
      : null,
    metadata: { cancelled: String(r.counts.cancelled), rejected_lines: String(r.counts.rejected) },
  };
}
