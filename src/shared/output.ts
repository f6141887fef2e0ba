/**
 * Result lines in the form of their request: the native form gets
 * `{custom_id, text, token_ids, finish_reason, usage, error}`, an OpenAI line gets an OpenAI batch
 * output line whose body is a `text_completion` object.
 */
import { createHash } from 'node:crypto';
import type { BatchRecord } from './batch-store.js';
import type { ErrorRecord, ResultRecord } from './schemas.js';

export interface NativeResultLine {
  custom_id: string;
  text: string;
  token_ids: number[];
  finish_reason: 'eos' | 'stop' | 'length';
  usage: { prompt_tokens: number; completion_tokens: number };
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

export interface OpenAIResultLine {
  id: string;
  custom_id: string;
  response: { status_code: number; request_id: string; body: OpenAICompletion };
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

export function formatResultLine(r: ResultRecord, batchId: string): NativeResultLine | OpenAIResultLine {
  if (r.form === 'native') return { ...nativeResultFields(r), error: null };
  const sid = stableId(batchId, r.custom_id);
  return {
    id: `batch_req_${sid}`,
    custom_id: r.custom_id,
    response: {
      status_code: 200,
      request_id: `req_${sid}`,
      body: {
        id: `cmpl-${sid}`,
        object: 'text_completion',
        created: Math.floor(r.finished_at / 1000),
        model: r.model,
        choices: [{ text: r.text, index: 0, logprobs: null, finish_reason: openAIFinishReason(r.finish_reason) }],
        usage: { prompt_tokens: r.prompt_tokens, completion_tokens: r.completion_tokens, total_tokens: r.prompt_tokens + r.completion_tokens },
      },
    },
    error: null,
  };
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
  metadata: { cancelled: string; rejected_lines: string };
}

const secs = (ms: number | null): number | null => (ms === null ? null : Math.floor(ms / 1000));

export function toOpenAIBatch(r: BatchRecord): OpenAIBatchObject {
  return {
    id: r.id,
    object: 'batch',
    endpoint: '/v1/completions',
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
    metadata: { cancelled: String(r.counts.cancelled), rejected_lines: String(r.counts.rejected) },
  };
}
