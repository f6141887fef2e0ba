/**
 * Logits processors, in Hugging Face's order, as small pieces over [R, V] scores with per-row
 * parameters as [R, 1] tensors (runtime params never change the program). `buildProcessors` picks the
 * pieces for a strategy and a batch; each runs inside the caller's tf.tidy.
 *
 * Written for the wasm backend's fast kernels: masks come from `step` (comparison kernels are ten
 * times slower there), and the repetition penalty touches only the tokens seen, by gather/scatter.
 */
import { tf } from './backend.js';
import { BatchgenError } from '../shared/errors.js';
import type { Strategy } from '../shared/params.js';

/** Runs device work inside the caller's tf.tidy and shape scope (a variant's `onDevice`). */
export type OnDevice = <X extends tf.TensorContainer>(f: () => X) => X;

/** Masked-out scores: finite, so that masks can be built by multiplication; exp() of it is 0. */
export const MASKED = -1e30;
/** Rows whose top_k is at most this (and top_p is 1) take the top-k fast path instead of a full sort. */
export const TOPK_FAST_MAX = 64;

/** Per-row runtime parameters as device tensors, uploaded once per batch. */
export interface RowParamTensors {
  penalty: tf.Tensor2D; // [R, 1]
  invTemperature: tf.Tensor2D; // [R, 1]
  /** k-1 of each row's top_k, V-1 when top_k is 0 (off): an index into the descending sort. */
  topKIndex: tf.Tensor2D; // [R, 1] int32
  topP: tf.Tensor2D; // [R, 1]
}

/** The tokens each row has seen (prompt and generated), for the repetition penalty. */
export interface SeenTokens {
  /** [R * M, 2] int32 (row, token) pairs of the same entries, for scatterND. */
  pairs: tf.Tensor2D;
  /** [R, M] 1 for a real entry, 0 for padding. */
  mask: tf.Tensor2D;
}

/** Tokens banned per row at this step (min_new_tokens, no_repeat_ngram_size), at a fixed width W. */
export interface BannedTokens {
  /** [R * W, 2] int32 (row, token) pairs; padding repeats a real pair. */
  pairs: tf.Tensor2D;
  /** [R * W] 1 for a real entry, 0 for padding. */
  mask: tf.Tensor1D;
}

export type Processor = (scores: tf.Tensor2D) => tf.Tensor2D;

/** Banned tokens get MASKED added (each real pair appears once, so a score becomes about MASKED). */
export function banTokens(ban: BannedTokens): Processor {
  return (s) => tf.add(s, tf.scatterND(ban.pairs, tf.mul(ban.mask, MASKED), s.shape)) as tf.Tensor2D;
}

/**
 * x[r, idx[r]] for each row, as [R, 1]. A one-hot product instead of gather with batchDims, which
 * read out of bounds on the wasm backend in some allocation patterns.
 */
function pickPerRow(x: tf.Tensor2D, idx: tf.Tensor2D): tf.Tensor2D {
  const [R, C] = x.shape;
  return tf.sum(tf.mul(x, tf.oneHot(tf.reshape(idx, [R]), C)), 1, true) as tf.Tensor2D;
}

/** 1 where x < 0, else 0. */
const isNegative = (x: tf.Tensor) => tf.step(tf.neg(x));

/**
 * Hugging Face's RepetitionPenaltyLogitsProcessor: each seen token's score is multiplied by the
 * penalty when negative, divided by it when positive.
 */
export function repetitionPenalty(seen: SeenTokens, penalty: tf.Tensor2D): Processor {
  return (s) => {
    const g = tf.reshape(tf.gatherND(s, seen.pairs), seen.mask.shape); // [R, M]
    const neg = isNegative(g);
    const penalised = tf.add(tf.mul(neg, tf.mul(g, penalty)), tf.mul(tf.sub(1, neg), tf.div(g, penalty)));
    const delta = tf.reshape(tf.mul(tf.sub(penalised, g), seen.mask), [-1]);
    return tf.add(s, tf.scatterND(seen.pairs, delta, s.shape)) as tf.Tensor2D;
  };
}

export function temperature(invTemperature: tf.Tensor2D): Processor {
  return (s) => tf.mul(s, invTemperature);
}

/** Scores below a per-row threshold [R, 1] become MASKED. */
function maskBelow(s: tf.Tensor2D, threshold: tf.Tensor): tf.Tensor2D {
  const below = tf.step(tf.sub(threshold, s)); // 1 where s < threshold
  return tf.add(tf.mul(s, tf.sub(1, below)), tf.mul(below, MASKED)) as tf.Tensor2D;
}

/**
 * Top-k then top-p, per row, from one descending sort of the scores. Top-k keeps scores ≥ the k-th
 * largest; top-p keeps the smallest prefix of the sorted, top-k-filtered distribution whose mass
 * reaches top_p (Hugging Face removes tokens whose ascending cumulative probability is ≤ 1 - top_p,
 * always keeping the best one). Both become one threshold on the unsorted scores.
 */
export function topKTopP(p: RowParamTensors): Processor {
  return (s) => {
    const V = s.shape[1];
    const sorted = tf.topk(s, V, true).values as tf.Tensor2D;
    const kth = pickPerRow(sorted, p.topKIndex); // [R, 1]
    const sortedK = maskBelow(sorted, kth);
    const tailMass = tf.cumsum(tf.softmax(sortedK), 1, false, true); // Σ_{j ≥ i} p_j
    const keep = tf.step(tf.sub(tailMass, tf.sub(1, p.topP))); // tail mass > 1 - top_p
    const one = tf.scalar(1, 'int32');
    const kept = tf.maximum(tf.sum(tf.cast(keep, 'int32'), 1, true), one); // [R, 1], at least one
    const pth = pickPerRow(sortedK, tf.sub(kept, one)); // the smallest kept score
    return maskBelow(s, tf.maximum(kth, pth));
  };
}

/**
 * Top-k alone, for batches whose rows all have top_p = 1 and top_k ≤ TOPK_FAST_MAX: the k-th
 * largest comes from a small top-k instead of a full sort. Rows with top_k = 0 are not filtered.
 */
export function topKOnly(p: RowParamTensors, topKOff: tf.Tensor2D): Processor {
  return (s) => {
    const best = tf.topk(s, Math.min(TOPK_FAST_MAX, s.shape[1]), true).values;
    const kth = pickPerRow(best, tf.minimum(p.topKIndex, tf.scalar(best.shape[1] - 1, 'int32')));
    return maskBelow(s, tf.add(tf.mul(kth, tf.sub(1, topKOff)), tf.mul(topKOff, MASKED)));
  };
}

/** The nucleus path looks at this many of the best scores instead of sorting the vocabulary. */
export const NUCLEUS_CANDIDATES = 1024;

/**
 * Top-k then top-p from the best NUCLEUS_CANDIDATES scores, without a full sort. Exact for a row
 * whose kept set lies within the candidates (its top_k is at most that many, or its nucleus is
 * reached before the last candidate): `fits` [R, 1] is 1 for such rows. Probabilities are taken over
 * the whole (top-k-filtered) vocabulary: the normaliser comes from the fused softmax.
 * Cost on wasm at [8, 50257]: a few ms, against about 40 for the full sort.
 */
export function topKTopPCandidates(s: tf.Tensor2D, p: RowParamTensors, topKOff: tf.Tensor2D): { filtered: tf.Tensor2D; fits: tf.Tensor2D } {
  const C = Math.min(NUCLEUS_CANDIDATES, s.shape[1]);
  const best = tf.topk(s, C, true).values as tf.Tensor2D; // [R, C], descending
  const beyond = tf.mul(tf.step(tf.sub(tf.cast(p.topKIndex, 'float32'), C - 1)), tf.sub(1, topKOff)); // top_k > C (0 is off)
  const noTopK = tf.maximum(topKOff, beyond); // rows whose k-th score is not among the candidates
  const kthHere = pickPerRow(best, tf.minimum(p.topKIndex, tf.scalar(C - 1, 'int32')));
  const kth = tf.add(tf.mul(kthHere, tf.sub(1, noTopK)), tf.mul(noTopK, MASKED));
  const bestK = maskBelow(best, kth);
  // log of the softmax normaliser over the filtered vocabulary, from the largest probability.
  const logZ = tf.sub(tf.slice(best, [0, 0], [-1, 1]), tf.log(tf.max(tf.softmax(maskBelow(s, kth)), 1, true)));
  const probs = tf.exp(tf.sub(bestK, logZ)); // [R, C]
  const before = tf.cumsum(probs, 1, true); // mass of the better candidates
  const keep = tf.step(tf.sub(p.topP, before)); // HF keeps i while its ascending tail mass 1 - before > 1 - top_p
  const one = tf.scalar(1, 'int32');
  const kept = tf.maximum(tf.sum(tf.cast(keep, 'int32'), 1, true), one);
  const pth = pickPerRow(bestK, tf.sub(kept, one));
  const nucleusInside = tf.step(tf.sub(C - 0.5, tf.cast(kept, 'float32'))); // kept < C
  const fits = tf.mul(tf.maximum(nucleusInside, tf.sub(1, noTopK)), tf.sub(1, beyond)) as tf.Tensor2D;
  return { filtered: maskBelow(s, tf.maximum(kth, pth)), fits };
}

/**
 * Top-k and top-p for a batch that needs more than the small top-k: from the nucleus candidates
 * when every row's kept set lies within them (one readback decides), else from a full sort. Warm-up
 * (`warming`) runs both, so that neither is a retrace later. Takes ownership of `scores`.
 */
export async function filterTopKTopP(
  scores: tf.Tensor2D,
  p: RowParamTensors,
  topKOff: tf.Tensor2D,
  onDevice: OnDevice,
  warming: boolean,
): Promise<tf.Tensor2D> {
  const { filtered, fits } = onDevice(() => topKTopPCandidates(scores, p, topKOff));
  const allFit = (await fits.data()).every((f) => f === 1);
  fits.dispose();
  if (allFit && !warming) {
    scores.dispose();
    return filtered;
  }
  filtered.dispose();
  const full = onDevice(() => topKTopP(p)(scores));
  scores.dispose();
  return full;
}

/** Uploads each row's distinct seen tokens (`tokensOf(r)`, flattened), padded to M. */
export function uploadSeenTokens(R: number, M: number, tokensOf: (r: number) => number[][]): SeenTokens {
  const pairs = new Int32Array(R * M * 2);
  const mask = new Float32Array(R * M);
  for (let r = 0; r < R; r++) {
    const uniq = [...new Set(tokensOf(r).flat())];
    for (let j = 0; j < M; j++) {
      const id = uniq[j] ?? uniq[0];
      pairs[(r * M + j) * 2] = r;
      pairs[(r * M + j) * 2 + 1] = id;
      mask[r * M + j] = j < uniq.length ? 1 : 0;
    }
  }
  return { pairs: tf.tensor2d(pairs, [R * M, 2], 'int32'), mask: tf.tensor2d(mask, [R, M]) };
}

/** Uploads each row's banned next tokens (`bansOf(r)`), padded to W; more than W is an error. */
export function uploadBannedTokens(R: number, W: number, bansOf: (r: number) => number[]): BannedTokens {
  const pairs = new Int32Array(R * W * 2);
  const mask = new Float32Array(R * W);
  for (let r = 0; r < R; r++) {
    const bans = bansOf(r);
    if (bans.length > W) throw new BatchgenError('generation_failed', `row ${r}: ${bans.length} banned tokens exceed the width ${W}`);
    for (let j = 0; j < W; j++) {
      pairs[(r * W + j) * 2] = r;
      pairs[(r * W + j) * 2 + 1] = bans[j] ?? bans[0] ?? 0;
      mask[r * W + j] = j < bans.length ? 1 : 0;
    }
  }
  return { pairs: tf.tensor2d(pairs, [R * W, 2], 'int32'), mask: tf.tensor1d(mask) };
}

/** What a batch needs, decided on the host from its rows' parameters. */
export interface ProcessorPlan {
  penalty: boolean;
  /** some row has min_new_tokens or no_repeat_ngram_size */
  ban: boolean;
  /** 'full': top-p or a large top-k (the caller filters: nucleus candidates, else a full sort); 'fast': small top-k only. */
  topk: 'full' | 'fast';
}

/**
 * The processors of a strategy, in order. Beam search runs them on log-probabilities, as HF does.
 * With plan.topk 'full', the top-k/top-p filter is left to the caller, which needs a host decision
 * between the nucleus candidates and a full sort.
 */
export function buildProcessors(
  strategy: Strategy,
  plan: ProcessorPlan,
  p: RowParamTensors,
  seen: SeenTokens | null,
  topKOff: tf.Tensor2D,
  banned: BannedTokens | null = null,
): Processor[] {
  const list: Processor[] = [];
  if (plan.penalty && seen) list.push(repetitionPenalty(seen, p.penalty));
  if (plan.ban && banned) list.push(banTokens(banned));
  if (strategy === 'sample') list.push(temperature(p.invTemperature));
  if (strategy === 'sample' && plan.topk === 'fast') list.push(topKOnly(p, topKOff));
  return list;
}

export function applyAll(scores: tf.Tensor2D, processors: Processor[]): tf.Tensor2D {
  return processors.reduce((s, f) => f(s), scores);
}

/** log(softmax): the wasm backend's softmax is fused and fast, its exp is not. */
export function logSoftmax(s: tf.Tensor2D): tf.Tensor2D {
  return tf.log(tf.softmax(s));
}

/**
 * Inverse-CDF sampling with one host-drawn uniform per row: the first index whose cumulative
 * probability exceeds u·total (the count of entries with cum ≤ u·total). Zero-probability tokens
 * are never chosen, even for u = 0.
 */
export function sampleRows(scores: tf.Tensor2D, uniforms: tf.Tensor2D): tf.Tensor1D {
  const cum = tf.cumsum(tf.softmax(scores), 1);
  const V = scores.shape[1];
  const total = tf.slice(cum, [0, V - 1], [-1, 1]);
  const below = tf.sub(1, tf.step(tf.sub(cum, tf.mul(uniforms, total)))); // cum ≤ u·total
  return tf.minimum(tf.sum(tf.cast(below, 'int32'), 1), tf.scalar(V - 1, 'int32')) as tf.Tensor1D;
}
