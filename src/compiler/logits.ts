/**
 * Logits processors, in Hugging Face's order, as small pieces over [R, V] scores with per-row
 * parameters as [R, 1] tensors (runtime params never change the program). `buildProcessors` picks the
 * pieces for a strategy; each runs inside the caller's tf.tidy.
 */
import { tf } from './backend.js';
import type { Strategy } from '../shared/params.js';

/** Per-row runtime parameters as device tensors, uploaded once per batch. */
export interface RowParamTensors {
  penalty: tf.Tensor2D; // [R, 1]
  invTemperature: tf.Tensor2D; // [R, 1]
  /** k-1 of each row's top_k, V-1 when top_k is 0 (off): an index into the descending sort. */
  topKIndex: tf.Tensor2D; // [R, 1] int32
  topP: tf.Tensor2D; // [R, 1]
}

export type Processor = (scores: tf.Tensor2D) => tf.Tensor2D;

/** Hugging Face's RepetitionPenaltyLogitsProcessor over a presence mask of the tokens seen so far. */
export function repetitionPenalty(presence: tf.Tensor2D, penalty: tf.Tensor2D): Processor {
  return (s) => {
    const penalised = tf.where(tf.less(s, 0), tf.mul(s, penalty), tf.div(s, penalty));
    return tf.where(tf.greater(presence, 0), penalised, s) as tf.Tensor2D;
  };
}

export function temperature(invTemperature: tf.Tensor2D): Processor {
  return (s) => tf.mul(s, invTemperature);
}

/**
 * Top-k then top-p, per row, from one descending sort of the scores. Top-k keeps scores ≥ the k-th
 * largest; top-p keeps the smallest prefix of the sorted, top-k-filtered distribution whose mass
 * reaches top_p (Hugging Face removes tokens whose ascending cumulative probability is ≤ 1 - top_p,
 * always keeping the best one). Both become thresholds on the unsorted scores.
 */
export function topKTopP(p: RowParamTensors): Processor {
  return (s) => {
    const V = s.shape[1];
    const sorted = tf.topk(s, V, true).values as tf.Tensor2D;
    const kth = tf.gather(sorted, p.topKIndex, 1, 1) as tf.Tensor2D; // [R, 1]
    const sortedK = tf.where(tf.less(sorted, kth), tf.fill(sorted.shape, -Infinity), sorted);
    const tailMass = tf.cumsum(tf.softmax(sortedK), 1, false, true); // Σ_{j ≥ i} p_j
    const keep = tf.greater(tailMass, tf.sub(1, p.topP));
    const one = tf.scalar(1, 'int32');
    const kept = tf.maximum(tf.sum(tf.cast(keep, 'int32'), 1, true), one); // [R, 1], at least one
    const pth = tf.gather(sortedK, tf.sub(kept, one), 1, 1); // the smallest kept score
    const threshold = tf.maximum(kth, pth);
    return tf.where(tf.less(s, threshold), tf.fill(s.shape, -Infinity), s) as tf.Tensor2D;
  };
}

/** The processors of a strategy, in order. Beam search runs them on log-probabilities, as HF does. */
export function buildProcessors(strategy: Strategy, presence: tf.Tensor2D, p: RowParamTensors): Processor[] {
  const list: Processor[] = [repetitionPenalty(presence, p.penalty)];
  if (strategy === 'sample') list.push(temperature(p.invTemperature), topKTopP(p));
  return list;
}

export function applyAll(scores: tf.Tensor2D, processors: Processor[]): tf.Tensor2D {
  return processors.reduce((s, f) => f(s), scores);
}

/**
 * Inverse-CDF sampling with one host-drawn uniform per row: the first index whose cumulative
 * probability exceeds u·total. Zero-probability tokens are never chosen.
 */
export function sampleRows(scores: tf.Tensor2D, uniforms: tf.Tensor2D): tf.Tensor1D {
  const cum = tf.cumsum(tf.softmax(scores), 1);
  const V = scores.shape[1];
  const total = tf.slice(cum, [0, V - 1], [-1, 1]);
  const below = tf.less(cum, tf.mul(uniforms, total));
  return tf.minimum(tf.sum(tf.cast(below, 'int32'), 1), tf.scalar(V - 1, 'int32')) as tf.Tensor1D;
}
