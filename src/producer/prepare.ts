/**
 * One request → one job: tokenize the prompt, resolve parameters against the model's defaults,
 * check the limits and compute the compile key. Throws a BatchgenError naming the reason.
 */
import { DEFAULT_BUCKET_POLICY, type BucketPolicy } from '../shared/buckets.js';
import { compileKeyFor, keyId, type CompileKey } from '../shared/compile-key.js';
import { BatchgenError } from '../shared/errors.js';
import type { ModelInfo } from '../model/info.js';
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
export function keyFor(
  model: string,
  promptTokens: number,
  params: ResolvedParams,
  contextLength: number,
  policies: BucketPolicies,
): CompileKey {
  return compileKeyFor(model, promptTokens, params, contextLength, policies.prompt, policies.newTokens ?? policies.prompt);
}

export async function prepareRequest(
  req: GenerationRequest,
  model: ModelInfo,
  policies: BucketPolicies = DEFAULT_POLICIES,
): Promise<PreparedRequest> {
  let promptIds: number[];
  if (typeof req.prompt === 'string') {
    if (req.prompt.length === 0) throw new BatchgenError('invalid_request', 'prompt is empty');
    promptIds = await model.tokenizer.encode(req.prompt);
  } else {
    promptIds = req.prompt;
    const bad = promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= model.vocabSize);
    if (bad !== undefined)
      throw new BatchgenError(
        'invalid_request',
        `prompt token id ${bad} is outside the vocabulary of ${model.name} (0..${model.vocabSize - 1})`,
      );
  }
  if (promptIds.length > MAX_PROMPT_TOKENS || promptIds.length > model.contextLength) {
    throw new BatchgenError(
      'context_length_exceeded',
      `prompt of ${promptIds.length} tokens exceeds the context of ${model.name} (${model.contextLength})`,
    );
  }
  const params = resolveParams(req.params, model.defaults);
  const key = keyFor(model.name, promptIds.length, params, model.contextLength, policies);
  return { key, keyId: keyId(key), promptIds, params };
}
