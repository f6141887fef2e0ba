/**
 * An independent reference for the compiler tests: GPT-2 in plain float64 JavaScript, with no cache,
 * no padding and no tfjs. Each forward pass recomputes the whole sequence. On top of it: greedy
 * generation, seeded sampling (Hugging Face's warpers in plain JS) and a naive beam search written
 * the classic way (Hugging Face's BeamSearchScorer / BeamHypotheses), by exhaustive expansion over
 * the full vocabulary. Nothing here imports the code under test except its data types.
 */
import type { Gpt2Config } from '../../src/model/config.js';
import type { Gpt2BlockWeights, Gpt2Weights } from '../../src/compiler/types.js';

export interface RefModel {
  config: Gpt2Config;
  weights: Gpt2Weights;
}

// ---- forward ------------------------------------------------------------------------------------

function layerNorm(x: Float64Array, g: Float32Array, b: Float32Array, eps: number): Float64Array {
  const n = x.length;
  let mean = 0;
  for (let i = 0; i < n; i++) mean += x[i];
  mean /= n;
  let v = 0;
  for (let i = 0; i < n; i++) v += (x[i] - mean) ** 2;
  v /= n;
  const inv = 1 / Math.sqrt(v + eps);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * g[i] + b[i];
  return out;
}

/** x [in] @ W [in, out] (row-major, Conv1D layout) + b [out]. */
function affine(x: Float64Array, W: Float32Array, b: Float32Array, nOut: number): Float64Array {
  const out = new Float64Array(nOut);
  for (let j = 0; j < nOut; j++) out[j] = b[j];
  for (let i = 0; i < x.length; i++) {
    const xi = x[i];
    const row = i * nOut;
    for (let j = 0; j < nOut; j++) out[j] += xi * W[row + j];
  }
  return out;
}

/** gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
function geluNew(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

function block(xs: Float64Array[], blk: Gpt2BlockWeights, c: Gpt2Config): Float64Array[] {
  const E = c.n_embd;
  const H = c.n_head;
  const D = E / H;
  const T = xs.length;
  const eps = c.layer_norm_epsilon;
  const qkv = xs.map((x) => affine(layerNorm(x, blk.ln1g, blk.ln1b, eps), blk.attnW, blk.attnB, 3 * E));
  const out: Float64Array[] = [];
  for (let t = 0; t < T; t++) {
    const merged = new Float64Array(E);
    for (let h = 0; h < H; h++) {
      const qOff = h * D;
      const kOff = E + h * D;
      const vOff = 2 * E + h * D;
      // causal: position t attends to 0..t
      const scores = new Float64Array(t + 1);
      let max = -Infinity;
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += qkv[t][qOff + d] * qkv[s][kOff + d];
        scores[s] = dot / Math.sqrt(D);
        if (scores[s] > max) max = scores[s];
      }
      let sum = 0;
      for (let s = 0; s <= t; s++) {
        scores[s] = Math.exp(scores[s] - max);
        sum += scores[s];
      }
      for (let s = 0; s <= t; s++) {
        const p = scores[s] / sum;
        for (let d = 0; d < D; d++) merged[h * D + d] += p * qkv[s][vOff + d];
      }
    }
    const attn = affine(merged, blk.projW, blk.projB, E);
    const x1 = new Float64Array(E);
    for (let e = 0; e < E; e++) x1[e] = xs[t][e] + attn[e];
    const fc = affine(layerNorm(x1, blk.ln2g, blk.ln2b, eps), blk.fcW, blk.fcB, 4 * E);
    for (let i = 0; i < fc.length; i++) fc[i] = geluNew(fc[i]);
    const mlp = affine(fc, blk.fcProjW, blk.fcProjB, E);
    for (let e = 0; e < E; e++) x1[e] += mlp[e];
    out.push(x1);
  }
  return out;
}

/** The logits [V] after the last token of `ids` (positions 0..len-1), recomputing everything. */
export function referenceLogits(m: RefModel, ids: number[]): Float64Array {
  const c = m.config;
  const w = m.weights;
  const E = c.n_embd;
  const V = c.vocab_size;
  if (ids.length === 0 || ids.length > c.n_positions) throw new RangeError(`reference forward: ${ids.length} tokens`);
  let xs: Float64Array[] = ids.map((id, t) => {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`token id ${id}`);
    const x = new Float64Array(E);
    for (let e = 0; e < E; e++) x[e] = w.wte[id * E + e] + w.wpe[t * E + e];
    return x;
  });
  for (const blk of w.blocks) xs = block(xs, blk, c);
  const h = layerNorm(xs[xs.length - 1], w.lnFg, w.lnFb, c.layer_norm_epsilon);
  const head = w.lmHead ?? w.wte; // [V, E]; tied to wte when lm_head is absent
  const logits = new Float64Array(V);
  for (let v = 0; v < V; v++) {
    let s = 0;
    const row = v * E;
    for (let e = 0; e < E; e++) s += h[e] * head[row + e];
    logits[v] = s;
  }
  return logits;
}

// ---- processors (Hugging Face semantics, plain JS) ------------------------------------------------

/** RepetitionPenaltyLogitsProcessor: every token id in `seen`: score < 0 ? score * p : score / p. */
export function applyRepetitionPenalty(scores: Float64Array, seen: Iterable<number>, penalty: number): Float64Array {
  const out = Float64Array.from(scores);
  if (penalty === 1) return out;
  for (const id of new Set(seen)) out[id] = scores[id] < 0 ? scores[id] * penalty : scores[id] / penalty;
  return out;
}

/** TopKLogitsWarper: scores below the k-th largest become -inf (k = 0 or k ≥ V: nothing). */
export function hfTopK(scores: Float64Array, k: number): Float64Array {
  const out = Float64Array.from(scores);
  if (k <= 0 || k >= scores.length) return out;
  const kth = Float64Array.from(scores).sort()[scores.length - k];
  for (let i = 0; i < out.length; i++) if (out[i] < kth) out[i] = -Infinity;
  return out;
}

/**
 * TopPLogitsWarper: sort ascending, cumulative softmax, remove the tokens whose cumulative
 * probability is ≤ 1 - top_p, always keeping the most likely one. The removed tokens are a prefix
 * of the ascending order, so they are the scores below the first kept sorted score.
 */
export function hfTopP(scores: Float64Array, p: number): Float64Array {
  const out = Float64Array.from(scores);
  if (p >= 1) return out;
  const sorted = Float64Array.from(scores).sort(); // ascending, -Infinity first
  const probs = softmax(sorted);
  let cum = 0;
  let j = 0;
  for (; j < sorted.length - 1; j++) {
    cum += probs[j];
    if (!(cum <= 1 - p)) break;
  }
  const firstKept = sorted[j];
  for (let i = 0; i < out.length; i++) if (out[i] < firstKept) out[i] = -Infinity;
  return out;
}

export function softmax(scores: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i] > max) max = scores[i];
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    out[i] = scores[i] === -Infinity ? 0 : Math.exp(scores[i] - max);
    sum += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

export function logSoftmax(scores: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i] > max) max = scores[i];
  let sum = 0;
  for (let i = 0; i < scores.length; i++) sum += Math.exp(scores[i] - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(scores.length);
  for (let i = 0; i < scores.length; i++) out[i] = scores[i] - lse;
  return out;
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** The gap between the largest and the second largest value. */
export function topGap(x: ArrayLike<number>): number {
  let a = -Infinity;
  let b = -Infinity;
  for (let i = 0; i < x.length; i++) {
    if (x[i] > a) {
      b = a;
      a = x[i];
    } else if (x[i] > b) b = x[i];
  }
  return a - b;
}

/**
 * Inverse-CDF draw: the first index whose cumulative probability reaches u (probabilities that sum
 * to 1). Also returns how far u is from the nearest cumulative boundary, so that a test can tell a
 * real difference from float32 rounding at a boundary.
 */
export function inverseCdf(probs: Float64Array, u: number): { index: number; margin: number } {
  let cum = 0;
  let index = -1;
  let margin = Infinity;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] === 0) continue;
    const next = cum + probs[i];
    margin = Math.min(margin, Math.abs(next - u));
    if (index < 0 && next >= u) index = i;
    cum = next;
  }
  if (index < 0)
    index =
      probs.length -
      1 -
      Array.from(probs)
        .reverse()
        .findIndex((p) => p > 0);
  return { index, margin };
}

// ---- generation ---------------------------------------------------------------------------------

export interface RefGenerated {
  tokens: number[];
  finishReason: 'eos' | 'length';
}

export interface RefGreedyOptions {
  maxNewTokens: number;
  repetitionPenalty?: number;
  stopIds?: number[];
}

/**
 * Greedy decoding with a full recompute at every step: argmax after the repetition penalty over
 * prompt + generated tokens; a stop id ends the row (and is kept). `gaps` is the top-1 minus top-2
 * processed score at each step (a small gap is a near tie, where float32 may pick the other).
 */
export function referenceGreedy(
  m: RefModel,
  prompt: number[],
  o: RefGreedyOptions,
): RefGenerated & { gaps: number[]; logits: Float64Array[] } {
  const stops = new Set(o.stopIds ?? []);
  const seq = [...prompt];
  const tokens: number[] = [];
  const gaps: number[] = [];
  const logits: Float64Array[] = [];
  for (let t = 0; t < o.maxNewTokens; t++) {
    const raw = referenceLogits(m, seq);
    logits.push(raw);
    const s = applyRepetitionPenalty(raw, seq, o.repetitionPenalty ?? 1);
    const x = argmax(s);
    gaps.push(topGap(s));
    tokens.push(x);
    seq.push(x);
    if (stops.has(x)) return { tokens, finishReason: 'eos', gaps, logits };
  }
  return { tokens, finishReason: 'length', gaps, logits };
}

export interface RefSampleOptions {
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty?: number;
  stopIds?: number[];
  /** One uniform in [0, 1) per step. */
  uniform: () => number;
}

/**
 * Sampling with Hugging Face's processor order: repetition penalty, temperature, top-k, top-p, then
 * an inverse-CDF draw with the given uniforms. `margins` is, per step, the distance of the uniform
 * from the nearest cumulative-probability boundary.
 */
export function referenceSample(m: RefModel, prompt: number[], o: RefSampleOptions): RefGenerated & { margins: number[] } {
  const stops = new Set(o.stopIds ?? []);
  const seq = [...prompt];
  const tokens: number[] = [];
  const margins: number[] = [];
  for (let t = 0; t < o.maxNewTokens; t++) {
    let s = applyRepetitionPenalty(referenceLogits(m, seq), seq, o.repetitionPenalty ?? 1);
    if (o.temperature !== 1) s = s.map((x) => x / o.temperature);
    s = hfTopP(hfTopK(s, o.topK), o.topP);
    const { index, margin } = inverseCdf(softmax(s), o.uniform());
    margins.push(margin);
    tokens.push(index);
    seq.push(index);
    if (stops.has(index)) return { tokens, finishReason: 'eos', margins };
  }
  return { tokens, finishReason: 'length', margins };
}

// ---- beam search, the classic way -----------------------------------------------------------------

export interface RefBeamOptions {
  numBeams: number;
  maxNewTokens: number;
  lengthPenalty: number;
  earlyStopping: boolean | 'never';
  stopIds: number[];
  repetitionPenalty?: number;
  /**
   * The score the "is done" check compares with the worst finished hypothesis: 'candidates' is the
   * legacy BeamSearchScorer (the best of all kept candidates, EOS ones included), 'running' is the
   * vectorised `_beam_search` of transformers ≥ 4.50 (the best beam that goes on). Default 'running'.
   */
  doneCheck?: 'candidates' | 'running';
}

interface Hypothesis {
  tokens: number[];
  score: number;
}

/** BeamHypotheses: the k best finished hypotheses, scored sum_logprobs / generated_len ** length_penalty. */
class BeamHypotheses {
  readonly beams: Hypothesis[] = [];
  private worst = 1e9;

  constructor(
    private readonly k: number,
    private readonly lengthPenalty: number,
    private readonly earlyStopping: boolean | 'never',
    private readonly maxNewTokens: number,
  ) {}

  add(tokens: number[], sumLogprobs: number, generatedLen: number): void {
    const score = sumLogprobs / generatedLen ** this.lengthPenalty;
    if (this.beams.length < this.k || score > this.worst) {
      this.beams.push({ tokens, score });
      if (this.beams.length > this.k) {
        const sorted = this.beams.map((h, i) => [h.score, i]).sort((a, b) => a[0] - b[0]);
        this.beams.splice(sorted[0][1], 1);
        this.worst = sorted[1][0];
      } else this.worst = Math.min(score, this.worst);
    }
  }

  isDone(bestSumLogprobs: number, generatedLen: number): boolean {
    if (this.beams.length < this.k) return false;
    if (this.earlyStopping === true) return true;
    const len = this.earlyStopping === 'never' && this.lengthPenalty > 0 ? this.maxNewTokens : generatedLen;
    return this.worst >= bestSumLogprobs / len ** this.lengthPenalty;
  }

  best(): Hypothesis {
    return [...this.beams].sort((a, b) => b.score - a.score)[0];
  }
}

const memo = new WeakMap<Gpt2Weights, Map<string, { token: number; logprob: number }[]>>();

/**
 * The n best processed log-probs after `seq`: log_softmax over the whole vocabulary, then the
 * repetition penalty over seq, best first. Memoised per sequence (beam searches with different
 * settings over the same prompt share most prefixes).
 */
function bestLogProbs(m: RefModel, seq: number[], penalty: number, n: number): { token: number; logprob: number }[] {
  if (!memo.has(m.weights)) memo.set(m.weights, new Map());
  const cache = memo.get(m.weights)!;
  const key = `${penalty}:${n}:${seq.join(',')}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const lp = applyRepetitionPenalty(logSoftmax(referenceLogits(m, seq)), seq, penalty);
  const best: { token: number; logprob: number }[] = [];
  for (let v = 0; v < lp.length; v++) {
    if (best.length === n && lp[v] <= best[n - 1].logprob) continue;
    let i = best.length;
    while (i > 0 && best[i - 1].logprob < lp[v]) i--;
    best.splice(i, 0, { token: v, logprob: lp[v] });
    if (best.length > n) best.pop();
  }
  cache.set(key, best);
  return best;
}

export interface RefBeamResult extends RefGenerated {
  score: number;
  /** All finished hypotheses at the end, best first. */
  hypotheses: Hypothesis[];
  /** Steps run. */
  steps: number;
  /** Smallest gap between consecutive kept candidate scores over all steps (near ties). */
  minCandidateGap: number;
}

/**
 * Beam search for one prompt: at each step every running beam is expanded over the whole vocabulary
 * (log_softmax, then the repetition penalty on the log-probs, plus the beam's score), the best
 * max(2, 1 + #stop ids) * k candidates are kept; candidates ending in a stop id that rank in the top
 * k become finished hypotheses, the best k others continue. At max_new_tokens the running beams are
 * finalized as hypotheses. Generated length (stop id included) is the length-penalty length.
 *
 * Two details follow the vectorised search of current transformers rather than the legacy scorer,
 * as the project follows it: the "is done" check (see `doneCheck`; the legacy one is available), and
 * a finished hypothesis keeps the stop id it produced (the legacy scorer stored it without the stop
 * id and padded the output with eos_token_id[0]). Everything else is the legacy BeamHypotheses.
 */
export function referenceBeamSearch(m: RefModel, prompt: number[], o: RefBeamOptions): RefBeamResult {
  const k = o.numBeams;
  const stops = new Set(o.stopIds);
  const keep = Math.max(2, 1 + stops.size) * k;
  const hyps = new BeamHypotheses(k, o.lengthPenalty, o.earlyStopping, o.maxNewTokens);
  let running: Hypothesis[] = [{ tokens: [], score: 0 }];
  let done = false;
  let minCandidateGap = Infinity;
  let steps = 0;
  for (let t = 0; t < o.maxNewTokens && !done; t++) {
    steps++;
    // The best `keep` candidates over all beams, best first. A beam contributes at most `keep` of
    // them, so each beam's own best keep + 1 (from the full log_softmax) are enough.
    const top: { score: number; beam: number; token: number }[] = [];
    running.forEach((beam, b) => {
      for (const c of bestLogProbs(m, [...prompt, ...beam.tokens], o.repetitionPenalty ?? 1, keep + 1)) {
        top.push({ score: beam.score + c.logprob, beam: b, token: c.token });
      }
    });
    top.sort((x, y) => y.score - x.score || x.beam - y.beam || x.token - y.token);
    top.length = Math.min(top.length, keep + 1);
    for (let i = 0; i + 1 < top.length; i++) minCandidateGap = Math.min(minCandidateGap, top[i].score - top[i + 1].score);
    top.length = Math.min(top.length, keep);

    const next: Hypothesis[] = [];
    for (let rank = 0; rank < top.length && next.length < k; rank++) {
      const c = top[rank];
      const tokens = [...running[c.beam].tokens, c.token];
      if (stops.has(c.token)) {
        if (rank >= k) continue; // an EOS candidate outside the top k never finishes
        hyps.add(tokens, c.score, t + 1);
      } else next.push({ tokens, score: c.score });
    }
    if (next.length < k) throw new Error('reference beam search: fewer than k running candidates');
    const best = (o.doneCheck ?? 'running') === 'running' ? next[0].score : top[0].score;
    done = hyps.isDone(best, t + 1);
    running = next;
  }
  if (!done) for (const b of running) hyps.add(b.tokens, b.score, b.tokens.length);
  const best = hyps.best();
  const last = best.tokens[best.tokens.length - 1];
  return {
    tokens: best.tokens,
    score: best.score,
    finishReason: stops.has(last) ? 'eos' : 'length',
    hypotheses: [...hyps.beams].sort((a, b) => b.score - a.score),
    steps,
    minCandidateGap,
  };
}

/** max|a - b| / max|b|. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`length ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}
