/**
 * Redis outages as one event each: a connection that goes down is logged once (not once per
 * reconnection attempt, nor once per queue), and once when it is back, with how long it was gone.
 * Also what kind of failure a Redis error is: a lost connection (retry when it is back) or a full
 * Redis (`OOM`: retry once memory is freed).
 */
import type { Redis } from 'ioredis';
import type { Logger } from '../observability/logger.js';

const CONNECTION_RE =
  /Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|Stream isn't writeable|enableOfflineQueue|MaxRetriesPerRequest|EPIPE|ENOTFOUND|EHOSTUNREACH|Command timed out|Socket closed unexpectedly/i;

const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** A failure of the connection itself (the command may not have reached Redis): worth retrying. */
export function isConnectionError(e: unknown): boolean {
  return CONNECTION_RE.test(messageOf(e));
}

/** Redis refused a write because maxmemory is reached (with `noeviction`). */
export function isOutOfMemory(e: unknown): boolean {
  return /^OOM\b/.test(messageOf(e)) || /\bOOM command not allowed\b/.test(messageOf(e));
}

/** Whether a condition is on, since when, and what turning it on or off should say: once each. */
export class Outage {
  private since: number | null = null;
  private reason = '';

  get down(): boolean {
    return this.since !== null;
  }

  /** When it began (ms), or null. */
  get downSince(): number | null {
    return this.since;
  }

  get lastReason(): string {
    return this.reason;
  }

  /** Marks it on; true only the first time of an outage (the one to log). */
  begin(now: number, reason: string): boolean {
    this.reason = reason;
    if (this.since !== null) return false;
    this.since = now;
    return true;
  }

  /** Marks it off; the outage's length in ms when it was on (the one to log), else null. */
  end(now: number): number | null {
    if (this.since === null) return null;
    const ms = now - this.since;
    this.since = null;
    return ms;
  }
}

/**
 * Logs a connection's outages: once when it is lost (with the first error) and once when it is
 * ready again. Returns the Outage, which callers may read (health) and a function to stop watching.
 */
export function watchConnection(redis: Redis, log: Logger, where: string): { outage: Outage; unwatch: () => void } {
  const outage = new Outage();
  const lost = (reason: string) => {
    if (outage.begin(Date.now(), reason))
      log.warn({ redis: where, err: reason }, 'Redis connection lost: retrying until it is back (logged once per outage)');
  };
  const onError = (e: Error) => lost(e.message);
  const onClose = () => lost('connection closed');
  const onReady = () => {
    const ms = outage.end(Date.now());
    if (ms !== null) log.info({ redis: where, downMs: ms }, 'Redis connection back');
  };
  redis.on('error', onError);
  redis.on('close', onClose);
  redis.on('ready', onReady);
  return {
    outage,
    unwatch: () => {
      redis.off('error', onError);
      redis.off('close', onClose);
      redis.off('ready', onReady);
    },
  };
}
