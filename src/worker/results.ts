/**
 * Turning row results into result records, and deciding what a failure means. Writing goes through
 * the BatchStore, whose scripts keep one result (or one error) per custom_id however many times a
 * job is delivered.
 */
import type { RowResult } from '../compiler/types.js';
import { BatchgenError, type ErrorCode } from '../shared/errors.js';
import { isOpenAIForm, type JobPayload, type ResultRecord } from '../shared/schemas.js';

/**
 * The text of a result: the generated ids decoded. For an OpenAI line (completions or chat) a final stop id is left out
 * of the text, as OpenAI leaves out the stop sequence; the tokenizer skips special tokens anyway.
 * A row ended by a stop string comes with its text already cut before the stop (both forms).
 */
export async function resultRecord(
  payload: JobPayload,
  row: RowResult,
  decode: (ids: number[]) => Promise<string>,
  meta: { worker: string; deliveries: number; queuedMs?: number },
): Promise<ResultRecord> {
  const ids = row.tokenIds;
  const textIds =
    isOpenAIForm(payload.form) && row.finishReason === 'eos' && ids.length > 0 && payload.params.stop_ids.includes(ids[ids.length - 1])
      ? ids.slice(0, -1)
      : ids;
  return {
    custom_id: payload.custom_id,
    line: payload.line,
    form: payload.form,
    model: payload.model,
    text: row.finishReason === 'stop' && row.text !== undefined ? row.text : await decode(textIds),
    token_ids: ids,
    finish_reason: row.finishReason,
    prompt_tokens: payload.prompt_ids.length,
    completion_tokens: ids.length,
    seed: payload.params.seed,
    key: payload.key,
    worker: meta.worker,
    created_at: payload.created_at,
    finished_at: Date.now(),
    deliveries: meta.deliveries,
    ...(meta.queuedMs === undefined ? {} : { queued_ms: meta.queuedMs }),
  };
}

/** ms from a job's enqueue to the start of its batch (0 when the clocks disagree). */
export function queuedMs(enqueuedAt: number, startedAt: number): number {
  return Math.max(0, startedAt - enqueuedAt);
}

/** Error codes that no retry can fix: the request itself is at fault. */
const PERMANENT: ErrorCode[] = [
  'invalid_request',
  'unsupported_parameter',
  'context_length_exceeded',
  'unknown_model',
  'invalid_payload',
  'shape_mismatch',
];

export interface FailureDecision {
  code: string;
  message: string;
  /** no retry: write the error now and fail the job for good */
  final: boolean;
}

/**
 * Whether a failed job is retried: permanent errors never; others while attempts remain
 * (`attemptsMade` failures so far, `attempts` allowed), as BullMQ counts them.
 */
export function decideFailure(err: unknown, attemptsMade: number, attempts: number): FailureDecision {
  const code = err instanceof BatchgenError ? err.code : 'generation_failed';
  const message = err instanceof Error ? err.message : String(err);
  const permanent = err instanceof BatchgenError && PERMANENT.includes(err.code);
  return { code, message, final: permanent || attemptsMade + 1 >= attempts };
}
