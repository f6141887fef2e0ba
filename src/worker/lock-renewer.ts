/**
 * Lock renewal for the jobs in hand. While a collected batch is checked, run and settled, a timer
 * extends the locks of its jobs every third of the lock duration, so that no other worker's stalled
 * check takes them back (the compiled function yields to the event loop between decode steps, so
 * the timer fires during long batches). A job leaves renewal once it is settled.
 *
 * The renewer sees one queue through a narrow context (as BullMQ's LockManager sees its worker).
 */
import type { Logger } from '../observability/logger.js';
import type { Taken } from './held-queue.js';

/** What the renewer needs from the queue whose jobs it renews. */
export interface LockContext {
  /** the key, for logs */
  readonly id: string;
  /** Extends these jobs' locks; resolves to the ids whose lock could not be extended. */
  extendLocks(jobs: Taken[], durationMs: number): Promise<string[]>;
}

/** A taken job's identity: its id and the token it was taken with. */
const jobIdOf = (t: Taken): string => `${t.job.id}\u0000${t.token}`;

/** The renewal interval for a lock duration: a third of it, at least 50 ms. */
export const renewIntervalMs = (lockDurationMs: number): number => Math.max(50, Math.floor(lockDurationMs / 3));

/** Renews the locks of the jobs it tracks until closed. */
export class LockRenewer {
  /** by job id: the settler hands back copies of the taken jobs (with their payloads), not the same objects */
  private readonly jobs = new Map<string, Taken>();
  private timer: NodeJS.Timeout | null;

  /** Tracks `jobs` and starts the timer at once. */
  constructor(
    private readonly ctx: LockContext,
    private readonly lockDurationMs: number,
    private readonly log: Logger,
    jobs: Iterable<Taken>,
  ) {
    for (const t of jobs) this.jobs.set(jobIdOf(t), t);
    this.timer = setInterval(() => this.renew(), renewIntervalMs(lockDurationMs));
  }

  /** Jobs still in hand (not yet settled). */
  get size(): number {
    return this.jobs.size;
  }

  /** The ids of the jobs still in hand. */
  jobIds(): string[] {
    return [...this.jobs.values()].map((t) => t.job.id ?? '?');
  }

  /** A settled job: its lock is not renewed any more. */
  untrack(t: Taken): void {
    this.jobs.delete(jobIdOf(t));
  }

  /** Stops the timer and forgets the jobs. Safe to call twice. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.jobs.clear();
  }

  private renew(): void {
    const list = [...this.jobs.values()];
    if (list.length === 0) return;
    this.ctx
      .extendLocks(list, this.lockDurationMs)
      .then((failed) => {
        if (failed.length) this.log.warn({ key: this.ctx.id, jobs: failed }, 'lock renewal failed (another worker may take these jobs)');
      })
      .catch((e: Error) => this.log.warn({ key: this.ctx.id, err: e.message }, 'lock renewal error'));
  }
}
