/**
 * Beam search bookkeeping for one batch item, on the host: a transcription of Hugging Face's
 * vectorised `_beam_search` (transformers ≥ 4.50) for one row. The device supplies, at each step,
 * the best candidates over all beams (accumulated log-prob, beam, token); this class decides which
 * continue, which finish, and when the row is done. Pure: no tensors, testable on its own.
 */
import type { FinishReason } from './types.js';

export interface Candidate {
  score: number; // accumulated (processed) log-prob of the continued sequence
  beam: number; // which running beam it extends
  token: number;
}

interface Hyp {
  tokens: number[];
  score: number;
  done: boolean;
}

const NEG = -1.0e9;

export interface BeamOptions {
  numBeams: number;
  maxNewTokens: number;
  lengthPenalty: number;
  earlyStopping: boolean | 'never';
  stopIds: number[];
}

/** Indices that sort `scores` descending; ties keep their order. */
function argsortDesc(scores: number[]): number[] {
  return scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a] || a - b);
}

export class BeamRow {
  running: Hyp[];
  finished: Hyp[];
  private heuristicUnsatisfied = true;
  done = false;
  private readonly stops: Set<number>;

  constructor(readonly o: BeamOptions) {
    const k = o.numBeams;
    // Only the first beam starts live, so the first step does not pick the same token k times.
    this.running = Array.from({ length: k }, (_, i) => ({ tokens: [], score: i === 0 ? 0 : NEG, done: false }));
    this.finished = Array.from({ length: k }, () => ({ tokens: [], score: NEG, done: false }));
    this.stops = new Set(o.stopIds);
  }

  /** How many candidates Hugging Face keeps per step: enough that k beams survive k EOS picks. */
  static candidatesNeeded(numBeams: number, nStops: number): number {
    return Math.max(2, 1 + nStops) * numBeams;
  }

  get runningScores(): number[] {
    return this.running.map((h) => h.score);
  }

  /**
   * One step. `cands` are the best candidates, best first (at least candidatesNeeded of them);
   * `t` is the number of tokens generated before this step. Returns, for each next running beam,
   * the beam it continues and the token it appends.
   */
  step(cands: Candidate[], t: number): { from: number[]; tokens: number[] } {
    const { numBeams: k, maxNewTokens, lengthPenalty: lp, earlyStopping } = this.o;
    const keep = BeamRow.candidatesNeeded(k, this.stops.size);
    const top = cands.slice(0, keep);
    const seqs = top.map((c) => [...this.running[c.beam].tokens, c.token]);
    const hits = top.map((c) => this.stops.has(c.token) || t + 1 >= maxNewTokens);

    // Next running beams: the best k that did not just stop.
    const runScores = top.map((c, i) => c.score + (hits[i] ? NEG : 0));
    const nextIdx = argsortDesc(runScores).slice(0, k);
    const next = nextIdx.map((i) => ({ tokens: seqs[i], score: runScores[i], done: false }));

    // Finished hypotheses: only the top k candidates may finish; merge with the old ones, keep k.
    const full = this.finished.every((h) => h.done) && earlyStopping === true ? NEG : 0;
    const hopeless = this.heuristicUnsatisfied ? 0 : NEG;
    const fresh = top.map((c, i) => {
      const justFinished = hits[i] && i < k;
      const score = c.score / (t + 1) ** lp + full + hopeless + (justFinished ? 0 : NEG);
      return { tokens: seqs[i], score, done: justFinished };
    });
    const merged = [...this.finished, ...fresh];
    this.finished = argsortDesc(merged.map((h) => h.score))
      .slice(0, k)
      .map((i) => merged[i]);
    this.running = next;

    // Can a running beam still beat the worst finished one?
    const bestLen = earlyStopping === 'never' && lp > 0 ? maxNewTokens : t + 1;
    const bestRunning = this.running[0].score / bestLen ** lp;
    const worst = Math.min(...this.finished.map((h) => h.score));
    this.heuristicUnsatisfied &&= this.finished.some((h) => bestRunning > (h.done ? worst : NEG));

    const openBeam = !(this.finished.every((h) => h.done) && earlyStopping === true);
    const valid = !hits.every(Boolean);
    this.done = !(this.heuristicUnsatisfied && openBeam && valid);
    return { from: nextIdx.map((i) => top[i].beam), tokens: nextIdx.map((i) => top[i].token) };
  }

  /** The best finished hypothesis (the best running one if none finished). */
  result(): { tokenIds: number[]; finishReason: FinishReason } {
    const best = this.finished[0].done ? this.finished[0] : this.running[0];
    const last = best.tokens[best.tokens.length - 1];
    return { tokenIds: best.tokens, finishReason: last !== undefined && this.stops.has(last) ? 'eos' : 'length' };
  }
}
