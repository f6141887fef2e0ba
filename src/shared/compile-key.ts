import { bucketFor, servableBuckets, type BucketPolicy } from './buckets.js';
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
 * The compile key of one request: a prompt and a new-token bucket that hold it and that the model
 * can serve (P + N ≤ context; see servableBuckets for how keys near the context are capped).
 * Refuses only requests whose real prompt length plus max_new_tokens does not fit the context
 * (positions are taken from the real tokens, so bucket padding costs no context), or that no
 * bucket of a list policy holds.
 */
export function compileKeyFor(
  model: string,
  promptTokens: number,
  params: Pick<ResolvedParams, 'max_new_tokens' | 'do_sample' | 'num_beams'>,
  contextLength: number,
  policy: BucketPolicy,
  newTokensPolicy: BucketPolicy = policy,
): CompileKey {
  if (promptTokens < 1) throw new BatchgenError('invalid_request', 'the prompt is empty after tokenization');
  const n = params.max_new_tokens;
  if (promptTokens + n > contextLength) {
    throw new BatchgenError(
      'context_length_exceeded',
      `prompt of ${promptTokens} tokens plus max_new_tokens ${n} exceeds the model's context of ${contextLength}`,
    );
  }
  const P0 = bucketFor(promptTokens, policy, contextLength);
  if (P0 === null)
    throw new BatchgenError('context_length_exceeded', `no prompt bucket of the policy holds a prompt of ${promptTokens} tokens`);
  const N0 = bucketFor(n, newTokensPolicy, contextLength);
  if (N0 === null) throw new BatchgenError('context_length_exceeded', `no new-token bucket of the policy holds max_new_tokens ${n}`);
  const b = servableBuckets(promptTokens, n, contextLength, P0, N0)!;
  return { model, P: b.P, N: b.N, strategy: strategyOf(params) };
}

/** Refuses a key that a model of `contextLength` positions cannot run (P + N > context). */
export function assertServable(key: CompileKey, contextLength: number): void {
  if (key.P + key.N > contextLength) {
    throw new BatchgenError(
      'context_length_exceeded',
      `compile key ${keyId(key)}: prompt bucket ${key.P} plus new-token bucket ${key.N} exceeds the model's context of ${contextLength}`,
    );
  }
}
