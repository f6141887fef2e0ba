/**
 * One request → one job: tokenize the prompt, resolve parameters against the model's defaults,
 * check the limits and compute the compile key. Throws a BatchgenError naming the reason.
 */
import { bucketFor, DEFAULT_BUCKET_POLICY, type BucketPolicy } from '../shared/buckets.js';
import { compileKeyFor, keyId, type CompileKey } from '../shared/compile-key.js';
import { BatchgenError } from '../shared/errors.js';
import type { ModelInfo } from '../shared/models.js';
import { resolveParams, type ResolvedParams } from '../shared/params.js';
import { MAX_PROMPT_TOKENS, type GenerationRequest } from '../shared/schemas.js';

export interface BucketPolicies {
  /** Prompt lengths. Default pow2 from 16. */
  prompt: BucketPolicy;
  /** max_new_tokens. Default: the prompt policy. */
  newTokens?: BucketPolicy;
}

export const DEFAULT_POLICIES: BucketPolicies = { prompt: DEFAULT_BUCKET_POLICY };

export interface PreparedRequest {
  key: CompileKey;
  keyId: string;
  promptIds: number[];
  params: ResolvedParams;
}

/** The compile key with separate policies for prompt and new-token buckets. */
export function keyFor(model: string, promptTokens: number, params: ResolvedParams, contextLength: number, policies: BucketPolicies): CompileKey {
  const key = compileKeyFor(model, promptTokens, params, contextLength, policies.prompt);
  if (policies.newTokens && policies.newTokens !== policies.prompt) {
    const N = bucketFor(params.max_new_tokens, policies.newTokens, contextLength);
    if (N === null) throw new BatchgenError('context_length_exceeded', `no new-token bucket of the policy fits max_new_tokens ${params.max_new_tokens}`);
    return { ...key, N };
  }
  return key;
}

/** Token ids of each stop string; a stop string must be exactly one token of the model's vocabulary. */
export async function stopIdsOf(stops: string[], model: ModelInfo): Promise<number[]> {
  const ids: number[] = [];
  for (const s of stops) {
    const enc = await model.tokenizer.encode(s);
    if (enc.length !== 1) {
      throw new BatchgenError(
        'unsupported_parameter',
        `stop ${JSON.stringify(s)} is ${enc.length} tokens for model ${model.name}: only stop strings of one token are supported`,
      );
    }
    ids.push(enc[0]);
  }
  return ids;
}

export async function prepareRequest(req: GenerationRequest, model: ModelInfo, policies: BucketPolicies = DEFAULT_POLICIES): Promise<PreparedRequest> {
  let promptIds: number[];
  if (typeof req.prompt === 'string') {
    if (req.prompt.length === 0) throw new BatchgenError('invalid_request', 'prompt is empty');
    promptIds = await model.tokenizer.encode(req.prompt);
  } else {
    promptIds = req.prompt;
    const bad = promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= model.vocabSize);
    if (bad !== undefined) throw new BatchgenError('invalid_request', `prompt token id ${bad} is outside the vocabulary of ${model.name} (0..${model.vocabSize - 1})`);
  }
  if (promptIds.length > MAX_PROMPT_TOKENS || promptIds.length > model.contextLength) {
    throw new BatchgenError('context_length_exceeded', `prompt of ${promptIds.length} tokens exceeds the context of ${model.name} (${model.contextLength})`);
  }
  const stopIds = await stopIdsOf(req.stop_strings, model);
  const genParams = stopIds.length ? { ...req.params, stop_token_ids: [...(req.params.stop_token_ids ?? []), ...stopIds] } : req.params;
  const params = resolveParams(genParams, model.defaults);
  const key = keyFor(model.name, promptIds.length, params, model.contextLength, policies);
  return { key, keyId: keyId(key), promptIds, params };
}
