/** What `npm run bench:autoscale:live` computes from a run's timestamps and heartbeats. Pure. */
import { quantile } from './simulator.js';

/** A worker process's life, in ms since the epoch (exitedAt null: still running). */
export interface Lifetime {
  startedAt: number;
  exitedAt: number | null;
}

/** Sum over workers of (exit − start) in seconds, each cut at `end` (ms); a worker still running counts to `end`. */
export function workerSeconds(lives: readonly Lifetime[], end: number): number {
  let ms = 0;
  for (const l of lives) ms += Math.max(0, Math.min(l.exitedAt ?? end, end) - l.startedAt);
  return ms / 1000;
}

/** The most workers alive at once over the lifetimes (a worker exiting as another starts counts once). */
export function peakConcurrent(lives: readonly Lifetime[], end: number): number {
  const edges: [number, number][] = [];
  for (const l of lives) {
    const exit = Math.min(l.exitedAt ?? end, end);
    if (exit <= l.startedAt) continue;
    edges.push([l.startedAt, 1], [exit, -1]);
  }
  edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let peak = 0;
  for (const [, d] of edges) {
    now += d;
    peak = Math.max(peak, now);
  }
  return peak;
}

/** The last heartbeat fields this benchmark reads (the worker's own WorkerStats). */
export interface HeartbeatCounts {
  pid: number;
  /** variants compiled (one per batch size of a key) */
  compiles: number;
  batch_sizes: number[];
}

/** Key compiles over worker processes: each one's last heartbeat's variant compiles ÷ its batch sizes. */
export function keyCompiles(last: Iterable<HeartbeatCounts>): number {
  let n = 0;
  for (const h of last) n += h.compiles / Math.max(1, h.batch_sizes.length);
  return Math.round(n);
}

/** Queue waits in seconds from stored result records (`queued_ms`); records without one are counted apart. */
export function waitsOf(records: readonly { queued_ms?: number }[]): { waits: number[]; missing: number } {
  const waits: number[] = [];
  let missing = 0;
  for (const r of records) {
    if (typeof r.queued_ms === 'number') waits.push(r.queued_ms / 1000);
    else missing++;
  }
  return { waits, missing };
}

/** p50, p95 and p99 of the waits, in seconds, to 0.01 s. */
export function waitQuantiles(waits: readonly number[]): { p50: number; p95: number; p99: number } {
  const q = (p: number) => +quantile([...waits], p).toFixed(2);
  return { p50: q(0.5), p95: q(0.95), p99: q(0.99) };
}

/** The index of the phase (consecutive, from 0 s, each `seconds` long) that time t falls in; the last one past the end. */
export function phaseOf(t: number, phases: readonly { seconds: number }[]): number {
  let end = 0;
  for (let i = 0; i < phases.length; i++) {
    end += phases[i].seconds;
    if (t < end) return i;
  }
  return phases.length - 1;
}

/** live ÷ predicted to two decimals; null when the prediction is 0. */
export function ratio(live: number, predicted: number): number | null {
  return predicted === 0 ? null : +(live / predicted).toFixed(2);
}
