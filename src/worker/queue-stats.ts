/**
 * What the queues of the held keys hold, read from Redis when metrics are scraped: waiting (plain and
 * prioritized), active (on any worker) and delayed jobs, and the age of the job at the head of the wait
 * list (the next one taken). Two pipelined round trips, bounded in time.
 */
import type { Redis } from 'ioredis';
import type { HeldQueue } from './held-queue.js';

/** One held key's queue, now. */
export interface QueueStat {
  key: string;
  /** the wait list and the prioritized set */
  waiting: number;
  /** being run, by any worker */
  active: number;
  /** retries waiting for their backoff */
  delayed: number;
  /** seconds since the head of the wait list was enqueued (0 when nothing waits) */
  oldestAgeSeconds: number;
}

/** How long a read may take before it is given up (the scrape then keeps the last values). */
export const QUEUE_STATS_TIMEOUT_MS = 1000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} took more than ${ms} ms`)), ms);
    timer.unref();
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function read(redis: Redis, list: readonly HeldQueue[], now: () => number): Promise<QueueStat[]> {
  if (list.length === 0) return [];
  const p = redis.pipeline();
  for (const h of list)
    p.llen(h.ref.waitList).llen(h.ref.activeList).zcard(h.ref.delayedSet).zcard(h.ref.prioritizedSet).lindex(h.ref.waitList, -1);
  const r = (await p.exec()) ?? [];
  const value = (i: number): unknown => {
    const [err, v] = r[i] ?? [null, null];
    if (err) throw err;
    return v;
  };
  const heads = list.map((_, i) => value(5 * i + 4) as string | null);
  const ts = redis.pipeline();
  heads.forEach((id, i) => id && ts.hget(list[i].jobKey(id), 'timestamp'));
  const stamps = heads.some((id) => id) ? ((await ts.exec()) ?? []) : [];
  const t = now();
  let j = 0;
  return list.map((h, i) => {
    const stamp = heads[i] ? Number(stamps[j++]?.[1] ?? Number.NaN) : Number.NaN;
    return {
      key: h.id,
      waiting: Number(value(5 * i)) + Number(value(5 * i + 3)),
      active: Number(value(5 * i + 1)),
      delayed: Number(value(5 * i + 2)),
      oldestAgeSeconds: Number.isFinite(stamp) ? Math.max(0, (t - stamp) / 1000) : 0,
    };
  });
}

/** Reads the queues of these held keys; rejects after `timeoutMs`. */
export function readQueueStats(
  redis: Redis,
  list: readonly HeldQueue[],
  opts: { timeoutMs?: number; now?: () => number } = {},
): Promise<QueueStat[]> {
  return withTimeout(read(redis, list, opts.now ?? Date.now), opts.timeoutMs ?? QUEUE_STATS_TIMEOUT_MS, 'reading the queue lengths');
}

/**
 * `fn` shared by the calls made while one is in flight: the gauges of one scrape are collected
 * together and read Redis once.
 */
export function shareInFlight<T>(fn: () => Promise<T>): () => Promise<T> {
  let inFlight: Promise<T> | null = null;
  return () => {
    inFlight ??= fn().finally(() => {
      inFlight = null;
    });
    return inFlight;
  };
}
