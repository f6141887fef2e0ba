/**
 * Per-row random streams for sampling: one uniform per row per step, drawn on the host from the
 * row's own seed (mulberry32), so a seeded request gives the same tokens whatever its batch
 * neighbours, its bucket or its position in the batch.
 */
import { mulberry32 } from '../shared/rng.js';

export class RowRng {
  /** A float in [0, 1). */
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
}
