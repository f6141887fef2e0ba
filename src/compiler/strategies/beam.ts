/**
 * Beam search, k rows per item: the device adds each beam's running score to its processed
 * log-probabilities and returns the best candidates per item over all k·V continuations (one
 * readback); each item's BeamRow (beam-search.ts) picks the next beams, and the step returns their
 * tokens and the cache rows they continue (`from`).
 */
import { tf } from '../backend.js';
import { BeamRow, type Candidate } from '../beam-search.js';
import { applyAll, logSoftmax, type OnDevice, type Processor } from '../logits.js';
import type { RowResult } from '../types.js';
import { MAX_STOP_TOKEN_IDS, type ResolvedParams } from '../../shared/params.js';
import type { DecodeStrategy, StepChoice } from './strategy.js';

export interface BeamOptions {
  k: number;
  V: number;
  /** How many EOS ids the model has: with a request's stop ids, they size the candidate list. */
  eosIds: number;
  onDevice: OnDevice;
  pad: number;
}

export class BeamStrategy implements DecodeStrategy {
  private readonly rows: BeamRow[];
  private readonly out: RowResult[];
  private readonly finished: boolean[];
  /** Candidates fetched per item and step. */
  private readonly candidates: number;

  /** `params` per item; items from `live` on are dummies, done from the start. */
  constructor(
    params: readonly ResolvedParams[],
    live: number,
    private readonly o: BeamOptions,
  ) {
    this.rows = params.map((p, b) => {
      const row = new BeamRow({
        numBeams: o.k,
        maxNewTokens: p.max_new_tokens,
        lengthPenalty: p.length_penalty,
        earlyStopping: p.early_stopping,
        stopIds: p.stop_ids,
      });
      row.done = b >= live;
      return row;
    });
    this.out = params.map(() => ({ tokenIds: [], finishReason: 'length' as const }));
    this.finished = params.map((_, b) => b >= live);
    // Hugging Face keeps max(2, 1 + #stop ids)·k candidates per step; the variant fetches enough for
    // the model's EOS ids plus the most a request can add, and each row uses its own prefix.
    this.candidates = Math.min(o.k * o.V, BeamRow.candidatesNeeded(o.k, o.eosIds + MAX_STOP_TOKEN_IDS));
  }

  generatedOf(r: number): number[] {
    return this.rows[Math.floor(r / this.o.k)].running[r % this.o.k].tokens;
  }

  get done(): boolean {
    return this.finished.every(Boolean);
  }

  async step(logits: tf.Tensor2D, processors: Processor[], t: number): Promise<StepChoice> {
    const [vals, idxs] = await this.best(logits, processors);
    return this.advance(vals, idxs, t);
  }

  /** Device part: the best `candidates` (score, flat beam·V + token) per item, read back together. */
  private async best(logits: tf.Tensor2D, processors: Processor[]): Promise<[ArrayLike<number>, ArrayLike<number>]> {
    const { k, V, onDevice } = this.o;
    const B = this.rows.length;
    const scores = tf.tensor2d(
      this.rows.flatMap((row) => row.runningScores),
      [B * k, 1],
    );
    const top = onDevice(() => {
      const lp = tf.add(applyAll(logSoftmax(logits), processors), scores);
      const { values, indices } = tf.topk(tf.reshape(lp, [B, k * V]), this.candidates, true);
      return [values, indices];
    });
    scores.dispose();
    try {
      const [vals, idxs] = await Promise.all(top.map((x) => x.data()));
      return [vals, idxs];
    } finally {
      tf.dispose(top);
    }
  }

  /** Host part: each live item's BeamRow steps; finished items keep their row (from[r] = r) and feed pad. */
  private advance(vals: ArrayLike<number>, idxs: ArrayLike<number>, t: number): StepChoice {
    const { k, V } = this.o;
    const C = this.candidates;
    const R = this.rows.length * k;
    const next = new Array<number>(R).fill(this.o.pad);
    const from = Array.from({ length: R }, (_, r) => r);
    this.rows.forEach((row, b) => {
      if (row.done) return;
      const cands: Candidate[] = [];
      for (let c = 0; c < C; c++) {
        const flat = idxs[b * C + c];
        cands.push({ score: vals[b * C + c], beam: Math.floor(flat / V), token: flat % V });
      }
      const step = row.step(cands, t);
      step.from.forEach((f, j) => {
        from[b * k + j] = b * k + f;
        next[b * k + j] = step.tokens[j];
      });
      if (row.done) {
        this.finished[b] = true;
        this.out[b] = row.result();
      }
    });
    return { next, from };
  }

  /** Items still running at the end (max steps reached) take their best hypothesis so far. */
  results(live: number): RowResult[] {
    this.rows.forEach((row, b) => b < live && !this.finished[b] && (this.out[b] = row.result()));
    return this.out.slice(0, live);
  }
}
