/** Seeded bursty arrival traces with Zipf key popularity, for the autoscaling simulator. Pure. */
import { mulberry32 } from '../../src/shared/rng.js';
import type { Arrival } from './simulator.js';

/** Zipf weights 1/rank^s over n keys, summing to 1. */
export function zipfWeights(n: number, s: number): number[] {
  const w = Array.from({ length: n }, (_, i) => 1 / (i + 1) ** s);
  const sum = w.reduce((a, b) => a + b, 0);
  return w.map((x) => x / sum);
}

/** A phase of the trace: `seconds` long at `rate` jobs/s in total. */
export interface Phase {
  seconds: number;
  rate: number;
}

/** Poisson arrivals, phase by phase, each job's key drawn from the weights. */
export function poissonTrace(keys: string[], weights: number[], phases: Phase[], seed: number): Arrival[] {
  const r = mulberry32(seed);
  const cum: number[] = [];
  weights.reduce((a, w, i) => (cum[i] = a + w), 0);
  const out: Arrival[] = [];
  let start = 0;
  for (const p of phases) {
    let t = start;
    for (;;) {
      t += -Math.log(1 - r()) / p.rate;
      if (t >= start + p.seconds) break;
      const u = r() * cum[cum.length - 1];
      const i = cum.findIndex((c) => u < c);
      out.push({ t, key: keys[i < 0 ? keys.length - 1 : i] });
    }
    start += p.seconds;
  }
  return out;
}
