/**
 * Greedy and sampling decoding, one row per item: the device applies the processors and picks one
 * token per row (argmax, or inverse-CDF sampling with a host-drawn uniform), one small readback
 * brings the picks home, and the host records them and decides which rows stop (EOS or stop id,
 * stop string, max_new_tokens).
 */
import { tf } from '../backend.js';
import { applyAll, filterTopKTopP, sampleRows, type OnDevice, type Processor } from '../logits.js';
import { RowRng } from '../rng.js';
import type { RowParams } from '../row-params.js';
import { checkStopStrings } from '../stop-strings.js';
import type { RowResult } from '../types.js';
import type { ResolvedParams } from '../../shared/params.js';
import type { DecodeStrategy, StepChoice } from './strategy.js';

export interface SampleOptions {
  sample: boolean;
  rowParams: RowParams;
  onDevice: OnDevice;
  /** During warm-up the top-k/top-p filter runs both of its paths. */
  warming: boolean;
  pad: number;
  /** The tokenizer's decode, for rows with stop strings. */
  decode?(ids: number[]): Promise<string>;
}

export class SampleStrategy implements DecodeStrategy {
  private readonly out: RowResult[];
  private readonly finished: boolean[];
  private readonly rngs: RowRng[];
  private readonly stopSets: Set<number>[];

  /** `params` per item (= row); items from `live` on are dummies, finished from the start. */
  constructor(
    private readonly params: readonly ResolvedParams[],
    live: number,
    private readonly o: SampleOptions,
  ) {
    this.out = params.map(() => ({ tokenIds: [], finishReason: 'length' as const }));
    this.finished = params.map((_, b) => b >= live);
    this.rngs = params.map((p) => new RowRng(p.seed));
    this.stopSets = params.map((p) => new Set(p.stop_ids));
  }

  generatedOf(r: number): number[] {
    return this.out[r].tokenIds;
  }

  get done(): boolean {
    return this.finished.every(Boolean);
  }

  async step(logits: tf.Tensor2D, processors: Processor[]): Promise<StepChoice> {
    return { next: await this.record(await this.pick(logits, processors)), from: null };
  }

  /** Device part: processors, the top-k/top-p filter when the plan leaves it here, then the pick. */
  private async pick(logits: tf.Tensor2D, processors: Processor[]): Promise<Int32Array | Float32Array | Uint8Array> {
    const { onDevice, rowParams } = this.o;
    let scores = onDevice(() => applyAll(logits, processors));
    if (this.o.sample && rowParams.plan.topk === 'full') {
      scores = await filterTopKTopP(scores, rowParams.tensors, rowParams.topKOff, onDevice, this.o.warming);
    }
    const uniforms = this.o.sample
      ? tf.tensor2d(
          this.rngs.map((g) => g.next()),
          [this.rngs.length, 1],
        )
      : null;
    const chosen = onDevice(() => (uniforms ? sampleRows(scores, uniforms) : (tf.argMax(scores, 1) as tf.Tensor1D)));
    tf.dispose([scores, ...(uniforms ? [uniforms] : [])]);
    try {
      return await chosen.data();
    } finally {
      chosen.dispose();
    }
  }

  /** Host part: appends each live row's pick and finishes rows on a stop id, a stop string or max_new_tokens. */
  private async record(picked: ArrayLike<number>): Promise<number[]> {
    const next = new Array<number>(this.params.length).fill(this.o.pad);
    for (let b = 0; b < this.params.length; b++) {
      if (this.finished[b]) continue;
      const x = picked[b];
      const out = this.out[b];
      out.tokenIds.push(x);
      next[b] = x;
      if (this.stopSets[b].has(x)) {
        this.finished[b] = true;
        out.finishReason = 'eos';
        continue;
      }
      const stops = this.params[b].stop_strings;
      const hit = stops?.length ? await checkStopStrings(out.tokenIds, stops, (ids) => this.o.decode!(ids)) : null;
      if (hit) {
        this.finished[b] = true;
        out.finishReason = 'stop';
        out.text = hit.text;
      } else if (out.tokenIds.length >= this.params[b].max_new_tokens) this.finished[b] = true;
    }
    return next;
  }

  results(live: number): RowResult[] {
    return this.out.slice(0, live);
  }
}
