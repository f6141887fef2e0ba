/**
 * A batch's per-row runtime parameters as device tensors (uploaded once per batch, owned here until
 * dispose), the processor plan decided from them on the host, and each step's processor list.
 * Item b's parameters apply to its k rows b*k .. b*k+k-1.
 */
import { tf } from './backend.js';
import { bannedTokens, needsBans } from './bans.js';
import {
  TOPK_FAST_MAX,
  buildProcessors,
  uploadBannedTokens,
  uploadSeenTokens,
  type Processor,
  type ProcessorPlan,
  type RowParamTensors,
} from './logits.js';
import type { ResolvedParams, Strategy } from '../shared/params.js';

/** The most stop ids of a row (EOS ids plus stop_token_ids), as the job payload bounds them. */
const MAX_STOP_IDS = 32;

/** One step's processors and the host-built inputs they read, freed by dispose(). */
export interface StepProcessors {
  list: Processor[];
  dispose(): void;
}

export class RowParams {
  readonly tensors: RowParamTensors;
  /** [R, 1] 1 where the row's top_k is 0 (off). */
  readonly topKOff: tf.Tensor2D;
  readonly plan: ProcessorPlan;

  /** `params` per item; `k` rows per item; `V` the vocabulary size. */
  constructor(
    private readonly params: readonly ResolvedParams[],
    private readonly k: number,
    V: number,
  ) {
    const R = params.length * k;
    const perRow = (f: (p: ResolvedParams) => number, dtype: 'float32' | 'int32' = 'float32') =>
      tf.tensor2d(
        Array.from({ length: R }, (_, r) => f(params[Math.floor(r / k)])),
        [R, 1],
        dtype,
      );
    this.tensors = {
      penalty: perRow((p) => p.repetition_penalty),
      invTemperature: perRow((p) => 1 / p.temperature),
      topKIndex: perRow((p) => (p.top_k > 0 ? Math.min(p.top_k, V) : V) - 1, 'int32'),
      topP: perRow((p) => p.top_p),
    };
    this.topKOff = perRow((p) => (p.top_k === 0 ? 1 : 0));
    this.plan = {
      penalty: params.some((p) => p.repetition_penalty !== 1),
      ban: needsBans(params),
      topk: params.every((p) => p.top_p >= 1 && p.top_k <= TOPK_FAST_MAX) ? 'fast' : 'full',
    };
  }

  /**
   * The processors of one step: the repetition penalty over each row's seen tokens (padded to M)
   * and the bans, both from the host's view of `prompts` (per item) and `generatedOf(row)`.
   */
  stepProcessors(strategy: Strategy, M: number, prompts: readonly number[][], generatedOf: (r: number) => number[]): StepProcessors {
    const R = this.params.length * this.k;
    const item = (r: number) => Math.floor(r / this.k);
    const seen = this.plan.penalty ? uploadSeenTokens(R, M, (r) => [prompts[item(r)], generatedOf(r)]) : null;
    let banned = null;
    try {
      banned = this.plan.ban
        ? uploadBannedTokens(R, M + MAX_STOP_IDS, (r) => bannedTokens(this.params[item(r)], prompts[item(r)], generatedOf(r)))
        : null;
    } catch (e) {
      if (seen) tf.dispose([seen.pairs, seen.mask]);
      throw e;
    }
    return {
      list: buildProcessors(strategy, this.plan, this.tensors, seen, this.topKOff, banned),
      dispose: () => {
        if (seen) tf.dispose([seen.pairs, seen.mask]);
        if (banned) tf.dispose([banned.pairs, banned.mask]);
      },
    };
  }

  dispose(): void {
    tf.dispose([this.tensors.penalty, this.tensors.invTemperature, this.tensors.topKIndex, this.tensors.topP, this.topKOff]);
  }
}
