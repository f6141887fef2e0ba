/**
 * The worker's watchdog: it notices a worker that has stopped fetching while work waits, and a Redis
 * that does not answer (frozen, unreachable), which the loop alone cannot see (its call just hangs),
 * and says so in /healthz. It also carries the out-of-memory condition (Redis refusing writes).
 *
 * The decision is a pure function (watchdogVerdict); the Watchdog class only keeps the times and
 * sends one PING at a time.
 */
import type { Redis } from 'ioredis';

export interface WatchdogInput {
  now: number;
  /** the last successful fetch: queue counts read, or a take */
  lastFetchAt: number;
  /** jobs waiting in the held queues at the last count */
  waiting: number;
  /** a batch is being run (no fetch is expected meanwhile) */
  running: boolean;
  /** the last PING answered */
  lastPongAt: number;
  /** since when Redis refuses writes for lack of memory, or null */
  oomSince: number | null;
  /** the bound, in ms */
  staleAfterMs: number;
}

export type WatchdogProblem = 'redis_not_answering' | 'not_fetching' | 'redis_out_of_memory';

export type WatchdogHealth = { ok: true } | { ok: false; problem: WatchdogProblem; reason: string; since_ms: number };

/** What the watchdog says now (first the most basic problem: Redis silent, then full, then the loop). */
export function watchdogVerdict(i: WatchdogInput): WatchdogHealth {
  const silentMs = i.now - i.lastPongAt;
  if (silentMs > i.staleAfterMs)
    return {
      ok: false,
      problem: 'redis_not_answering',
      reason: `Redis has not answered a PING for ${Math.round(silentMs / 1000)} s (down, frozen or unreachable)`,
      since_ms: silentMs,
    };
  if (i.oomSince !== null)
    return {
      ok: false,
      problem: 'redis_out_of_memory',
      reason: 'Redis refuses writes: maxmemory reached (noeviction); results cannot be written until memory is freed or maxmemory raised',
      since_ms: i.now - i.oomSince,
    };
  const idleMs = i.now - i.lastFetchAt;
  if (!i.running && i.waiting > 0 && idleMs > i.staleAfterMs)
    return {
      ok: false,
      problem: 'not_fetching',
      reason: `no fetch has succeeded for ${Math.round(idleMs / 1000)} s while ${i.waiting} job(s) wait`,
      since_ms: idleMs,
    };
  return { ok: true };
}

/** How often the watchdog pings Redis for a bound: a few times per bound, at most once a second. */
export const pingIntervalMs = (staleAfterMs: number): number => Math.max(50, Math.min(1000, Math.floor(staleAfterMs / 4)));

/** The times the verdict is made of, and the PING timer. */
export class Watchdog {
  lastFetchAt = Date.now();
  lastPongAt = Date.now();
  waiting = 0;
  private pinging = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly redis: Redis,
    readonly staleAfterMs: number,
  ) {}

  /** A fetch succeeded (with the jobs known to wait, when counted). */
  fetched(waiting?: number): void {
    this.lastFetchAt = Date.now();
    if (waiting !== undefined) this.waiting = waiting;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.ping(), pingIntervalMs(this.staleAfterMs));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Redis answered a PING within the bound. */
  answering(now = Date.now()): boolean {
    return now - this.lastPongAt <= this.staleAfterMs;
  }

  private ping(): void {
    if (this.pinging) return; // one outstanding PING at a time: a frozen Redis is not flooded
    this.pinging = true;
    this.redis.ping().then(
      () => {
        this.lastPongAt = Date.now();
        this.pinging = false;
      },
      () => {
        this.pinging = false;
      },
    );
  }

  verdict(running: boolean, oomSince: number | null, now = Date.now()): WatchdogHealth {
    return watchdogVerdict({
      now,
      lastFetchAt: this.lastFetchAt,
      waiting: this.waiting,
      running,
      lastPongAt: this.lastPongAt,
      oomSince,
      staleAfterMs: this.staleAfterMs,
    });
  }
}
