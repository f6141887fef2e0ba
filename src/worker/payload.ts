/**
 * A job payload read back from Redis is untrusted (anyone with access to Redis could have written
 * it): it is parsed again, and checked against the queue it sat in and the model the worker holds.
 * Nothing in a payload is ever used as a path.
 */
import type { CompileKey } from '../shared/compile-key.js';
import { keyId } from '../shared/compile-key.js';
import { parseJobId } from '../shared/keys.js';
import { strategyOf } from '../shared/params.js';
import { JobPayload, describeZodError } from '../shared/schemas.js';

/** Marks job data that BullMQ could not parse as JSON (see BatchWorker's job factory). */
export const BAD_JSON_MARK = '__batchgen_bad_json__';

export type PayloadCheck =
  | { ok: true; payload: JobPayload }
  | { ok: false; reason: string; customId: string | null; batchId: string | null; line: number | null };

export interface PayloadLimits {
  key: CompileKey;
  contextLength: number;
  vocabSize: number;
}

/** Parses and checks one job's data. The job id gives batch and custom_id when the data cannot. */
export function checkPayload(jobId: string | undefined, data: unknown, limits: PayloadLimits): PayloadCheck {
  let ids: { batchId: string | null; customId: string | null } = { batchId: null, customId: null };
  try {
    if (jobId) ids = parseJobId(jobId);
  } catch {
    // not one of ours: reported without batch
  }
  const fail = (reason: string, line: number | null = null): PayloadCheck => ({
    ok: false,
    reason,
    customId: ids.customId,
    batchId: ids.batchId,
    line,
  });
  if (data && typeof data === 'object' && BAD_JSON_MARK in data) {
    return fail(`job data is not JSON (${String((data as Record<string, unknown>)[BAD_JSON_MARK])})`);
  }
  const r = JobPayload.safeParse(data);
  if (!r.success) {
    const line =
      data && typeof data === 'object' && Number.isInteger((data as Record<string, unknown>).line)
        ? ((data as Record<string, unknown>).line as number)
        : null;
    return fail(`job payload does not match its schema: ${describeZodError(r.error)}`, line);
  }
  const p = r.data;
  const k = limits.key;
  const bad = (reason: string) => fail(reason, p.line);
  if (ids.batchId !== null && (ids.batchId !== p.batch_id || ids.customId !== p.custom_id)) {
    return bad(`job id ${jobId} does not match the payload's batch ${p.batch_id} and custom_id ${p.custom_id}`);
  }
  if (p.model !== k.model) return bad(`payload model "${p.model}" is not the model of its queue (${k.model})`);
  if (p.key !== keyId(k)) return bad(`payload key ${p.key} is not the key of its queue (${keyId(k)})`);
  if (k.P + k.N > limits.contextLength) {
    return bad(
      `compile key ${keyId(k)}: prompt bucket ${k.P} plus new-token bucket ${k.N} exceeds the model's context of ${limits.contextLength}, so no variant of it can run`,
    );
  }
  if (p.prompt_ids.length > k.P) return bad(`prompt of ${p.prompt_ids.length} tokens does not fit the queue's prompt bucket ${k.P}`);
  if (p.params.max_new_tokens > k.N)
    return bad(`max_new_tokens ${p.params.max_new_tokens} does not fit the queue's new-token bucket ${k.N}`);
  if (p.prompt_ids.length + p.params.max_new_tokens > limits.contextLength) {
    return bad(
      `prompt of ${p.prompt_ids.length} tokens plus max_new_tokens ${p.params.max_new_tokens} exceeds the model's context of ${limits.contextLength}`,
    );
  }
  const outside = p.prompt_ids.find((id) => id >= limits.vocabSize);
  if (outside !== undefined) return bad(`prompt token id ${outside} is outside the vocabulary (${limits.vocabSize})`);
  const badStop = [...p.params.stop_ids, p.params.pad_token_id].find((id) => id >= limits.vocabSize);
  if (badStop !== undefined) return bad(`stop or pad id ${badStop} is outside the vocabulary (${limits.vocabSize})`);
  if (strategyOf(p.params) !== k.strategy) return bad(`parameters ask for ${strategyOf(p.params)}, the queue runs ${k.strategy}`);
  if (p.params.num_beams > 1 && p.params.do_sample) return bad('beam sampling (do_sample with num_beams > 1) is not supported');
  if (p.params.num_beams > 1 && p.params.stop_strings?.length)
    return bad('stop strings with beam search (num_beams > 1) are not supported');
  return { ok: true, payload: p };
}
