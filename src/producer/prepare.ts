/**
 * One request → one job: tokenize the prompt (or render and tokenize a chat), resolve parameters against the model's defaults,
 * check the limits and compute the compile key. Throws a BatchgenError naming the reason.
 */
import { DEFAULT_BUCKET_POLICY, type BucketPolicy } from '../shared/buckets.js';
import { compileKeyFor, keyId, type CompileKey } from '../shared/compile-key.js';
import { BatchgenError } from '../shared/errors.js';
import { renderChat } from '../model/chat-template.js';
import type { ModelInfo } from '../model/info.js';
import { chatDefaultMaxTokens } from '../shared/openai-chat.js';
import { type GenerationParams, resolveParams, type ResolvedParams } from '../shared/params.js';
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

/**
 * The prompt's token ids: text encoded with the tokenizer's special tokens (Llama's BOS), ids
 * checked against the vocabulary, messages rendered with the model's chat template and encoded
 * without special tokens (the template writes them).
 */
export async function promptIdsOf(req: GenerationRequest, model: ModelInfo): Promise<number[]> {
  if (req.messages) {
    if (!model.chat)
      throw new BatchgenError(
        'invalid_request',
        `model ${model.name} has no chat template (no chat_template.jinja, no chat_template in tokenizer_config.json): send a prompt instead of messages`,
      );
    const text = renderChat(model.chat, req.messages, model.name);
    return model.tokenizer.encode(text, { addSpecialTokens: false });
  }
  const prompt = req.prompt!;
  if (typeof prompt === 'string') {
    if (prompt.length === 0) throw new BatchgenError('invalid_request', 'prompt is empty');
    return model.tokenizer.encode(prompt);
  }
  const bad = prompt.find((id) => !Number.isInteger(id) || id < 0 || id >= model.vocabSize);
  if (bad !== undefined)
    throw new BatchgenError(
      'invalid_request',
      `prompt token id ${bad} is outside the vocabulary of ${model.name} (0..${model.vocabSize - 1})`,
    );
  return prompt;
}

/** A request's parameters with max_new_tokens decided where its form leaves it to the prompt (an OpenAI chat line without max_tokens). */
export function requestParams(req: GenerationRequest, model: ModelInfo, promptTokens: number): GenerationParams {
  if (req.form !== 'openai_chat' || req.params.max_new_tokens !== undefined) return req.params;
  return { ...req.params, max_new_tokens: Math.max(1, chatDefaultMaxTokens(model.contextLength, promptTokens)) };
}

export async function prepareRequest(
  req: GenerationRequest,
  model: ModelInfo,
  policies: BucketPolicies = DEFAULT_POLICIES,
): Promise<PreparedRequest> {
  const promptIds = await promptIdsOf(req, model);
  if (promptIds.length === 0) throw new BatchgenError('invalid_request', 'the prompt encodes to no tokens');
  if (promptIds.length > MAX_PROMPT_TOKENS || promptIds.length > model.contextLength) {
    throw new BatchgenError(
      'context_length_exceeded',
      `prompt of ${promptIds.length} tokens exceeds the context of ${model.name} (${model.contextLength})`,
    );
  }
  const params = resolveParams(requestParams(req, model, promptIds.length), model.defaults);
  const key = keyFor(model.name, promptIds.length, params, model.contextLength, policies);
  return { key, keyId: keyId(key), promptIds, params };
}
