/**
 * What the generate loop asks of a decoding strategy at each step. A strategy owns its batch's
 * host state (tokens so far, which items are done, the results); it never owns the logits.
 */
import type { tf } from '../backend.js';
import type { Processor } from '../logits.js';
import type { RowResult } from '../types.js';

export interface StepChoice {
  /** [R] the token to feed each row at the next decode step (pad for finished rows). */
  next: number[];
  /** [R] the row each row's cache continues (beam search), or null: no reorder. */
  from: number[] | null;
}

export interface DecodeStrategy {
  /** The tokens row r has generated so far (for the repetition penalty and the bans). */
  generatedOf(r: number): number[];
  /** Chooses this step's tokens from `logits` [R, V] (not disposed) after `processors`; `t` tokens so far. */
  step(logits: tf.Tensor2D, processors: Processor[], t: number): Promise<StepChoice>;
  /** Whether every item has finished. */
  readonly done: boolean;
  /** The results of the first `live` items (the rest are dummies). */
  results(live: number): RowResult[];
}
