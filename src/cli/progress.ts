/**
 * Progress of a waiting submit: the rate over a sliding window (so that it falls to 0 while nothing
 * completes, instead of freezing on its last value), an ETA, and the line shown. Pure functions.
 */
import { formatDuration, progressBar } from './common.js';

/** How many requests were done at a time (ms). */
export interface ProgressSample {
  t: number;
  done: number;
}

/** Default window of the rate: 30 s. */
export const RATE_WINDOW_MS = 30_000;

/** Done at time x: the last sample at or before x (the first sample's count before it). */
function doneAt(samples: readonly ProgressSample[], x: number): number {
  let d = samples[0].done;
  for (const s of samples) {
    if (s.t > x) break;
    d = s.done;
  }
  return d;
}

/**
 * Requests per second over the last `windowMs` before `now` (over less when the samples start later).
 * 0 without samples, or when nothing was done in the window.
 */
export function slidingRate(samples: readonly ProgressSample[], now: number, windowMs = RATE_WINDOW_MS): number {
  if (samples.length === 0) return 0;
  const span = Math.min(windowMs, now - samples[0].t);
  if (span <= 0) return 0;
  return (doneAt(samples, now) - doneAt(samples, now - windowMs)) / (span / 1000);
}

/** Drops the samples the window no longer needs (keeps the last one at or before its start). */
export function trimSamples(samples: ProgressSample[], now: number, windowMs = RATE_WINDOW_MS): ProgressSample[] {
  const start = now - windowMs;
  let i = 0;
  while (i + 1 < samples.length && samples[i + 1].t <= start) i += 1;
  return samples.slice(i);
}

/** Time left at this rate, or null when it cannot be told (no progress in the window). */
export function etaMs(done: number, total: number, rate: number): number | null {
  if (done >= total) return 0;
  if (rate <= 0) return null;
  return ((total - done) / rate) * 1000;
}

/** The progress line: bar, status, failures, rate, elapsed time and ETA. */
export function progressText(p: { done: number; total: number; failed: number; status: string; rate: number; elapsedMs: number }): string {
  const eta = etaMs(p.done, p.total, p.rate);
  return (
    `${progressBar(p.done, p.total)} ${p.status}${p.failed ? `, ${p.failed} failed` : ''} ${p.rate.toFixed(1)} req/s` +
    `, elapsed ${formatDuration(p.elapsedMs)}, ETA ${eta === null ? '?' : formatDuration(eta)}`
  );
}

/**
 * Draws a batch's progress on stderr while something waits on it: rewritten in place on a terminal,
 * one line every `everyMs` otherwise (and a last one when the batch finishes). `update` takes each
 * record the wait sees; a timer redraws every second so the rate falls while nothing moves.
 */
export class ProgressReporter {
  private samples: ProgressSample[] = [];
  private last: { done: number; total: number; failed: number; status: string } | null = null;
  private lastLine = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly tty = process.stderr.isTTY === true;

  constructor(
    private readonly startedAt = Date.now(),
    private readonly everyMs = 5000,
  ) {
    this.timer = setInterval(() => this.draw(false), 1000);
    this.timer.unref();
  }

  update(r: { status: string; counts: { total: number; completed: number; failed: number } }, final: boolean): void {
    const done = r.counts.completed + r.counts.failed;
    this.last = { done, total: r.counts.total, failed: r.counts.failed, status: r.status };
    this.samples.push({ t: Date.now(), done });
    this.draw(final);
  }

  private draw(final: boolean): void {
    if (!this.last) return;
    const now = Date.now();
    this.samples = trimSamples(this.samples, now);
    const text = progressText({ ...this.last, rate: slidingRate(this.samples, now), elapsedMs: now - this.startedAt });
    if (this.tty) process.stderr.write(`\r${text}\x1b[K`);
    else if (final || now - this.lastLine > this.everyMs) {
      this.lastLine = now;
      process.stderr.write(`${text}\n`);
    }
  }

  /** Stops the redraws (ends the terminal line). Safe to call twice. */
  stop(): void {
    clearInterval(this.timer);
    if (this.tty && this.last) process.stderr.write('\n');
    this.last = null;
  }
}
