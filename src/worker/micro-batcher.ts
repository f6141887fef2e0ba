/**
 * The micro-batcher: collects up to B_max jobs from one queue, waiting at most max_wait_ms for more,
 * and plans how they run. Its decisions are pure functions; `collect` is the only part that does I/O,
 * through a JobSource.
 *
 * States of a worker's batch loop (BatchState):
 *
 *   idle ──(a queue has work)──▶ collecting ──(B_max jobs, or max_wait_ms since the first job,
 *     ▲                              │         or the queue is empty and nothing was taken)
 *     │                              ▼
 *     └──────── settling ◀──────── running
 *
 * - `idle`: no job held; the loop looks for a queue with waiting jobs, or sleeps.
 * - `collecting`: jobs are taken from one queue (their locks start now); no compile ever happens here.
 * - `running`: the compiled function runs; the locks of the held jobs are renewed meanwhile.
 * - `settling`: results and errors are written (once per custom_id), jobs completed or failed.
 * - `draining`: a stop was asked for: no more collecting; the current batch runs and settles.
 * - `stopped`: nothing held; connections closed.
 */
export type BatchState = 'idle' | 'collecting' | 'running' | 'settling' | 'draining' | 'stopped';

export interface MicroBatchOptions {
  /** Allowed batch sizes; a batch of n rows runs on the smallest allowed size ≥ n. Default [1, 2, 4, 8]. */
  batchSizes: number[];
  /** How long to wait for more jobs once the first one is taken. Default 20 ms. */
  maxWaitMs: number;
  /** Poll interval while waiting for more jobs. Default 2 ms. */
  pollMs: number;
}

/** What collecting does next: take more, wait for more, or stop and run what it has. */
export function collectStep(s: {
  have: number;
  bMax: number;
  elapsedMs: number;
  maxWaitMs: number;
  lastTakeEmpty: boolean;
}): 'take' | 'wait' | 'run' | 'give-up' {
  if (s.have >= s.bMax) return 'run';
  if (s.have === 0) return s.lastTakeEmpty ? 'give-up' : 'take';
  if (s.elapsedMs >= s.maxWaitMs) return 'run';
  return s.lastTakeEmpty ? 'wait' : 'take';
}

/**
 * Splits collected jobs into the batches that run. A job delivered before (it failed, or stalled
 * with a worker that died) runs alone, so a job that crashes its batch cannot take its neighbours
 * down with it a second time. The others run together.
 */
export function planBatches<T>(items: T[], deliveries: (t: T) => number, bMax: number): T[][] {
  const fresh: T[] = [];
  const alone: T[][] = [];
  for (const it of items) {
    if (deliveries(it) > 1) alone.push([it]);
    else fresh.push(it);
  }
  const out: T[][] = [];
  for (let i = 0; i < fresh.length; i += bMax) out.push(fresh.slice(i, i + bMax));
  return [...out, ...alone];
}

/** A queue candidate for the next batch. */
export interface QueueLoad {
  id: string;
  /** jobs waiting */
  waiting: number;
  /** retries waiting for their backoff (promoted when due, by the next take) */
  delayed: number;
  /** ms since the epoch this queue last got a batch (0 if never) */
  lastServedAt: number;
}

/**
 * Which queue to serve next: among queues with waiting jobs, those that can fill a whole batch
 * first, then the one served longest ago (no queue starves). Queues with only delayed jobs are
 * tried when nothing is waiting (a take promotes due retries). Null when there is nothing to do.
 */
export function chooseQueue(loads: QueueLoad[], bMax: number): QueueLoad | null {
  const waiting = loads.filter((l) => l.waiting > 0);
  const pool = waiting.length ? waiting : loads.filter((l) => l.delayed > 0);
  if (pool.length === 0) return null;
  return [...pool].sort((a, b) => {
    const fa = a.waiting >= bMax ? 1 : 0;
    const fb = b.waiting >= bMax ? 1 : 0;
    if (fa !== fb) return fb - fa;
    if (a.lastServedAt !== b.lastServedAt) return a.lastServedAt - b.lastServedAt;
    return b.waiting - a.waiting;
  })[0];
}

/** Where jobs come from: `take(n)` takes up to n jobs now (no blocking). */
export interface JobSource<T> {
  take(n: number): Promise<T[]>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Collects one micro-batch: up to bMax jobs, waiting at most maxWaitMs after the first for more.
 * Returns [] when the queue had nothing.
 */
export async function collect<T>(
  source: JobSource<T>,
  bMax: number,
  opts: Pick<MicroBatchOptions, 'maxWaitMs' | 'pollMs'>,
  now: () => number = Date.now,
): Promise<T[]> {
  const jobs: T[] = [];
  let first = 0;
  let lastTakeEmpty = false;
  for (;;) {
    const step = collectStep({
      have: jobs.length,
      bMax,
      elapsedMs: jobs.length ? now() - first : 0,
      maxWaitMs: opts.maxWaitMs,
      lastTakeEmpty,
    });
    if (step === 'run' || step === 'give-up') return jobs;
    if (step === 'wait') {
      await sleep(Math.max(0, Math.min(opts.pollMs, opts.maxWaitMs - (now() - first))));
      lastTakeEmpty = false;
      continue;
    }
    const got = await source.take(bMax - jobs.length);
    if (got.length && jobs.length === 0) first = now();
    jobs.push(...got);
    lastTakeEmpty = got.length === 0;
  }
}
