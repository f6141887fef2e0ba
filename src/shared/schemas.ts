/**
 * The data that crosses a trust boundary, as zod schemas (one name for a schema and its type):
 * request lines in both JSONL forms, the job payload that a worker reads back from Redis, and the
 * result and error records of a batch run.
 */
import { z } from 'zod';
import { BatchgenError, type ErrorCode } from './errors.js';
import { BATCH_ID_RE, MODEL_NAME_RE } from './keys.js';
import { LIMITS, utf8Bytes } from './limits.js';
import { GenerationParamFields, GenerationParams, MAX_STOP_STRINGS, MAX_STOP_STRING_CHARS, type ResolvedParams } from './params.js';

/** The longest prompt, in tokens, that a request or a payload may carry (far above any GPT-2 context). */
export const MAX_PROMPT_TOKENS = LIMITS.maxPromptTokens;
/** The longest prompt text, in UTF-8 bytes. */
export const MAX_PROMPT_BYTES = LIMITS.maxPromptBytes;

export const CustomId = z
  .string()
  .min(1)
  .max(LIMITS.maxCustomIdChars, `at most ${LIMITS.maxCustomIdChars} characters (the maxCustomIdChars limit)`);
export type CustomId = z.infer<typeof CustomId>;

export const ModelName = z.string().regex(MODEL_NAME_RE, 'a model name: letters, digits, ".", "_" or "-", never a path');
export type ModelName = z.infer<typeof ModelName>;

export const BatchId = z.string().regex(BATCH_ID_RE, 'a batch id: letters, digits, ".", "_" or "-"');
export type BatchId = z.infer<typeof BatchId>;

/** A prompt: text, or token ids already encoded with the model's tokenizer. */
export const Prompt = z.union([
  z.string().refine((s) => s.length <= MAX_PROMPT_BYTES && utf8Bytes(s) <= MAX_PROMPT_BYTES, {
    error: (i) => `${utf8Bytes(i.input as string)} bytes, above the limit of ${MAX_PROMPT_BYTES} (maxPromptBytes)`,
  }),
  z.array(z.number().int().min(0)).min(1).max(MAX_PROMPT_TOKENS, `at most ${MAX_PROMPT_TOKENS} token ids (the maxPromptTokens limit)`),
]);
export type Prompt = z.infer<typeof Prompt>;

/** A chat message as a chat template sees it (developer messages become system, text parts joined). */
export const ChatMessage = z
  .object({ role: z.enum(['system', 'user', 'assistant']), content: z.string(), name: z.string().optional() })
  .strict();
export type ChatMessage = z.infer<typeof ChatMessage>;

/** Chat messages as a request line gives them (OpenAI's form); each is checked by chatMessages(). */
export const ChatMessagesInput = z
  .array(z.object({ role: z.string(), content: z.unknown() }).catchall(z.unknown()))
  .min(1, 'at least one message is needed');
export type ChatMessagesInput = z.infer<typeof ChatMessagesInput>;

/** The native request line: custom_id, model, a prompt or chat messages, and Hugging Face generation parameters. */
export const NativeRequest = z
  .object({
    custom_id: CustomId,
    model: ModelName,
    prompt: Prompt.optional(),
    messages: ChatMessagesInput.optional(),
  })
  .extend(GenerationParams.shape)
  .strict();
export type NativeRequest = z.infer<typeof NativeRequest>;

/** An OpenAI batch line: `/v1/completions` (body: OpenAICompletionBody) or `/v1/chat/completions` (OpenAIChatBody). */
export const OpenAIRequestLine = z
  .object({
    custom_id: CustomId,
    method: z.literal('POST'),
    url: z.string(),
    body: z.record(z.string(), z.unknown()),
  })
  .strict();
export type OpenAIRequestLine = z.infer<typeof OpenAIRequestLine>;

/**
 * The body of an OpenAI `/v1/completions` request. Every parameter of that endpoint is known here;
 * those the engine cannot honour are accepted only at their neutral value (see fromOpenAI).
 */
export const OpenAICompletionBody = z
  .object({
    model: ModelName,
    prompt: z.union([Prompt, z.array(z.string()).min(1)]),
    max_tokens: GenerationParamFields.shape.max_new_tokens.nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().gt(0).max(1).nullish(),
    seed: z.number().int().min(0).max(0xffffffff).nullish(),
    stop: z
      .union([z.string().min(1).max(MAX_STOP_STRING_CHARS), z.array(z.string().min(1).max(MAX_STOP_STRING_CHARS)).max(MAX_STOP_STRINGS)])
      .nullish(),
    n: z.number().int().min(1).nullish(),
    best_of: z.number().int().min(1).nullish(),
    stream: z.boolean().nullish(),
    stream_options: z.unknown().optional(),
    echo: z.boolean().nullish(),
    logprobs: z.number().int().min(0).nullish(),
    presence_penalty: z.number().nullish(),
    frequency_penalty: z.number().nullish(),
    logit_bias: z.record(z.string(), z.number()).nullish(),
    suffix: z.string().nullish(),
    /** An end-user id: metadata, not a generation parameter. */
    user: z.string().nullish(),
  })
  .strict();
export type OpenAICompletionBody = z.infer<typeof OpenAICompletionBody>;

/** The form of a request line, which its output line follows: native, OpenAI completions, OpenAI chat. */
export const RequestForm = z.enum(['native', 'openai', 'openai_chat']);
export type RequestForm = z.infer<typeof RequestForm>;

/** Whether a form gets OpenAI batch output lines (and OpenAI error lines). */
export function isOpenAIForm(form: RequestForm | undefined): boolean {
  return form === 'openai' || form === 'openai_chat';
}

/** A request in the one form the producer works with, whichever form it came in. */
export interface GenerationRequest {
  custom_id: string;
  model: string;
  /** exactly one of prompt and messages: a chat request's prompt is its model's chat template rendered */
  prompt?: Prompt;
  messages?: ChatMessage[];
  params: GenerationParams;
  form: RequestForm;
}

/** The resolved parameters of one row, as stored in a job payload. */
export const ResolvedParamsSchema = GenerationParamFields.omit({
  stop_token_ids: true,
  stop_strings: true,
  min_new_tokens: true,
  no_repeat_ngram_size: true,
})
  .extend({
    stop_ids: z.array(z.number().int().min(0)).max(LIMITS.maxPayloadStopIds),
    pad_token_id: z.number().int().min(0),
    stop_strings: GenerationParamFields.shape.stop_strings.optional(),
    min_new_tokens: GenerationParamFields.shape.min_new_tokens.optional(),
    no_repeat_ngram_size: GenerationParamFields.shape.no_repeat_ngram_size.optional(),
  })
  .strict();
// A compile-time check that the schema and the compiler's interface agree.
const _resolvedParamsAgree: z.infer<typeof ResolvedParamsSchema> extends ResolvedParams ? true : never = true;
void _resolvedParamsAgree;

/** A job's data in Redis. Read back by workers, so parsed again there (it may have been written by anyone). */
export const JobPayload = z
  .object({
    v: z.literal(1),
    batch_id: BatchId,
    custom_id: CustomId,
    /** 1-based line of the input file (0 for a request that came from no file). */
    line: z.number().int().min(0),
    form: RequestForm,
    model: ModelName,
    /** The compile key id, `model:pP:nN:strategy`: it must be the key of the queue the job sits in. */
    key: z.string().max(200),
    prompt_ids: z
      .array(z.number().int().min(0))
      .min(1)
      .max(MAX_PROMPT_TOKENS, `at most ${MAX_PROMPT_TOKENS} token ids (the maxPromptTokens limit)`),
    params: ResolvedParamsSchema,
    /** ms since the epoch */
    created_at: z.number().int().min(0),
  })
  .strict();
export type JobPayload = z.infer<typeof JobPayload>;

/** `eos`: an EOS or stop id; `stop`: a stop string (the text ends before it); `length`: max_new_tokens. */
export const FinishReason = z.enum(['eos', 'stop', 'length']);

/** One request's result, written once per custom_id. */
export const ResultRecord = z.object({
  custom_id: CustomId,
  line: z.number().int().min(0),
  form: RequestForm,
  model: ModelName,
  text: z.string(),
  token_ids: z.array(z.number().int()),
  finish_reason: FinishReason,
  prompt_tokens: z.number().int().min(0),
  completion_tokens: z.number().int().min(0),
  seed: z.number().int(),
  key: z.string(),
  worker: z.string(),
  /** ms since the epoch: when the request was enqueued, and when its result was written */
  created_at: z.number(),
  finished_at: z.number(),
  /** how many times the job had been handed to a worker when this result was written */
  deliveries: z.number().int().min(1).optional(),
  /** ms from the job's enqueue (BullMQ's job timestamp) to the start of the batch that ran it; kept in Redis, not in output lines */
  queued_ms: z.number().min(0).optional(),
});
export type ResultRecord = z.infer<typeof ResultRecord>;

export const ErrorBody = z.object({ code: z.string(), message: z.string() });
export type ErrorBody = z.infer<typeof ErrorBody>;

/** One line of an errors file: a rejected line or a failed request. */
export const ErrorRecord = z.object({
  /** 1-based input line (null for a request that came from no file) */
  line: z.number().int().min(0).nullable(),
  custom_id: z.string().nullable(),
  error: ErrorBody,
});
export type ErrorRecord = z.infer<typeof ErrorRecord>;

export const BatchStatus = z.enum(['validating', 'in_progress', 'completed', 'cancelling', 'cancelled', 'failed']);
export type BatchStatus = z.infer<typeof BatchStatus>;

export function errorRecord(line: number | null, customId: string | null, code: ErrorCode | string, message: string): ErrorRecord {
  return { line, custom_id: customId, error: { code, message } };
}

/**
 * A union's failure told by the one branch whose type matched (a text prompt too long, a list of ids
 * too long), instead of zod's bare "Invalid input".
 */
function unionBranches(issues: z.core.$ZodIssue[]): z.core.$ZodIssue[] {
  return issues.flatMap((i) => {
    if (i.code !== 'invalid_union' || !('errors' in i) || !Array.isArray(i.errors)) return [i];
    const typed = i.errors.filter((b) => !b.every((x) => x.code === 'invalid_type' && x.path.length === 0));
    if (typed.length !== 1) return [i];
    return unionBranches(typed[0].map((x) => ({ ...x, path: [...i.path, ...x.path] })));
  });
}

/** A readable one-line account of a zod error: `path: message; path: message`. */
export function describeZodError(e: z.ZodError): string {
  return unionBranches(e.issues)
    .slice(0, 5)
    .map((i) => {
      const path = i.path.length ? i.path.map(String).join('.') : '(line)';
      return `${path}: ${i.message}`;
    })
    .join('; ');
}

/** The error code of a zod failure: an unknown key is an unsupported parameter, the rest invalid requests. */
export function zodErrorCode(e: z.ZodError): ErrorCode {
  return e.issues.some((i) => i.code === 'unrecognized_keys') ? 'unsupported_parameter' : 'invalid_request';
}

/** Parses with a schema or throws a BatchgenError with a readable reason. */
export function parseOrThrow<T>(schema: z.ZodType<T>, value: unknown, what: string, code?: ErrorCode): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  throw new BatchgenError(code ?? zodErrorCode(r.error), `${what}: ${describeZodError(r.error)}`);
}
