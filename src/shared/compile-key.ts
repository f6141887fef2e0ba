import { bucketFor, type BucketPolicy } from './buckets.js';
import { BatchgenError } from './errors.js';
import { strategyOf, type ResolvedParams, type Strategy } from './params.js';

/** Everything that changes a tensor shape or the program: one compiled function per key and batch size. */
export interface CompileKey {
  model: string;
  /** prompt bucket */
  P: number;
  /** new-token bucket */
  N: number;
  strategy: Strategy;
}

/** A compile key at one batch size: one compiled function. */
export interface Variant extends CompileKey {
  B: number;
}

export function keyId(k: CompileKey): string {
  return `${k.model}:p${k.P}:n${k.N}:${k.strategy}`;
}

export function variantId(v: Variant): string {
  return `${keyId(v)}:b${v.B}`;
}

/** Parses `model:p64:n32:greedy` back into a key (model names may not contain ':'). */
export function parseKeyId(id: string): CompileKey {
  const m = /^([^:]+):p(\d+):n(\d+):(greedy|sample|beam\d+)$/.exec(id);
  if (!m) throw new BatchgenError('invalid_request', `compile key "${id}": expected MODEL:pP:nN:STRATEGY`);
  return { model: m[1], P: Number(m[2]), N: Number(m[3]), strategy: m[4] as Strategy };
}

/**
 * The compile key of one request. Refuses prompts whose real length plus max_new_tokens does not fit
 * the model's context (positions are taken from the real tokens, so bucket padding costs no context).
 */
export function compileKeyFor(
  model: string,
  promptTokens: number,
  params: Pick<ResolvedParams, 'max_new_tokens' | 'do_sample' | 'num_beams'>,
  contextLength: number,
  policy: BucketPolicy,
): CompileKey {
  if (promptTokens < 1) throw new BatchgenError('invalid_request', 'the prompt is empty after tokenization');
  if (promptTokens + params.max_new_tokens > contextLength) {
    throw new BatchgenError(
      'context_length_exceeded',
      `prompt of ${promptTokens} tokens plus max_new_tokens ${params.max_new_tokens} exceeds the model's context of ${contextLength}`,
    );
  }
  const P = bucketFor(promptTokens, policy, contextLength);
  const N = bucketFor(params.max_new_tokens, policy, contextLength);
  if (P === null || N === null) {
    throw new BatchgenError('context_length_exceeded', `no bucket of the policy fits ${promptTokens} prompt tokens and ${params.max_new_tokens} new tokens`);
  }
  return { model, P, N, strategy: strategyOf(params) };
}
