/**
 * What a worker remembers about keys it does not hold: compiles that failed (tried again after a
 * while) and keys refused at the last refresh (max keys or the cache budget). It feeds the
 * heartbeat, the metrics and /healthz (workerHealth in key-policy.ts).
 */
import { hasWork, NO_WORK, type QueueWork } from '../shared/registry.js';
import { workerHealth, type RefusalReason, type WorkerHealth } from './key-policy.js';

interface Failure {
  error: string;
  at: number;
  retryAt: number;
  work: QueueWork;
}

export class KeyBook {
  private readonly failed = new Map<string, Failure>();
  private refused = new Map<string, { reason: RefusalReason; work: QueueWork }>();

  /** False while a failed compile waits for its retry time. */
  canTry(id: string, now: number): boolean {
    return (this.failed.get(id)?.retryAt ?? 0) <= now;
  }

  compileFailed(id: string, error: string, now: number, retryAt: number, work: QueueWork = NO_WORK): void {
    this.failed.set(id, { error, at: now, retryAt, work });
  }

  compiled(id: string): void {
    this.failed.delete(id);
  }

  /** The latest counts of the keys' queues (keys not counted are not served here any more). A failure past its retry time on a key with no work is forgotten. */
  noteWork(work: Map<string, QueueWork>, now: number): void {
    for (const [id, f] of this.failed) {
      f.work = work.get(id) ?? NO_WORK;
      if (f.retryAt <= now && !hasWork(f.work)) this.failed.delete(id);
    }
  }

  /** Replaces the refusals; returns the keys refused now that were not refused before (to log once). */
  setRefused(list: { key: string; reason: RefusalReason; work: QueueWork }[]): string[] {
    const fresh = list.filter((r) => !this.refused.has(r.key)).map((r) => r.key);
    this.refused = new Map(list.map((r) => [r.key, { reason: r.reason, work: r.work }]));
    return fresh;
  }

  get failedCount(): number {
    return this.failed.size;
  }

  get refusedCount(): number {
    return this.refused.size;
  }

  /** For the heartbeat. */
  report(): { compile_failed: { key: string; error: string; at: number }[]; refused: { key: string; reason: RefusalReason }[] } {
    return {
      compile_failed: [...this.failed].map(([key, f]) => ({ key, error: f.error, at: f.at })),
      refused: [...this.refused].map(([key, r]) => ({ key, reason: r.reason })),
    };
  }

  health(): WorkerHealth {
    return workerHealth(
      [...this.failed].map(([key, f]) => ({ key, error: f.error, work: f.work })),
      [...this.refused].map(([key, r]) => ({ key, reason: r.reason, work: r.work })),
    );
  }
}
