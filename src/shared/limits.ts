/**
 * The limits on untrusted input, in one table used by both sides: the producer checks each request
 * line against them (one error line per request that breaks one), and the worker checks every job
 * payload read back from Redis against them again (anyone with access to Redis could have written
 * it). The README's "Limits" table lists the same names and values.
 */

export interface Limits {
  /** bytes of one JSONL line (UTF-8, without its newline); a longer line is rejected unread */
  maxLineBytes: number;
  /** non-blank lines in one input file; the lines after it are not read */
  maxLinesPerBatch: number;
  /** bytes of a prompt given as text (UTF-8) */
  maxPromptBytes: number;
  /** tokens of a prompt, given as ids or after tokenization (the model's context is usually lower) */
  maxPromptTokens: number;
  /** max_new_tokens (also min_new_tokens and no_repeat_ngram_size) */
  maxNewTokens: number;
  /** stop strings of one request (OpenAI's limit) */
  maxStopStrings: number;
  /** characters of one stop string */
  maxStopStringChars: number;
  /** extra stop token ids of one request */
  maxStopTokenIds: number;
  /** stop ids of a payload: the request's stop ids plus the model's EOS ids */
  maxPayloadStopIds: number;
  /** characters of a custom_id */
  maxCustomIdChars: number;
}

export const LIMITS: Readonly<Limits> = Object.freeze({
  maxLineBytes: 1024 * 1024,
  maxLinesPerBatch: 1_000_000,
  maxPromptBytes: 256 * 1024,
  maxPromptTokens: 8192,
  maxNewTokens: 8192,
  maxStopStrings: 4,
  maxStopStringChars: 256,
  maxStopTokenIds: 16,
  maxPayloadStopIds: 32,
  maxCustomIdChars: 256,
});

/** The message of a value above its limit, the same on both sides: `prompt is 300000 bytes, above the limit of 262144 (maxPromptBytes)`. */
export function overLimit(what: string, value: number, unit: string, name: keyof Limits, limits: Limits = LIMITS): string {
  return `${what} is ${value}${unit ? ` ${unit}` : ''}, above the limit of ${limits[name]} (${name})`;
}

/** UTF-8 bytes of a string, without encoding it when its length already decides. */
export function utf8Bytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}
