/**
 * Per-row random streams for sampling: one uniform per row per step, drawn on the host from the
 * row's own seed (mulberry32), so a seeded request gives the same tokens whatever its batch
 * neighbours, its bucket or its position in the batch.
 */
export class RowRng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}
