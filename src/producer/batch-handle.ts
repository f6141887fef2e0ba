/** A handle on one batch run, from `GenerationClient.submitBatch()` or `client.batch(id)`. */
import { type BatchRecord, FINISHED_STATUSES, type Settled } from '../shared/batch-store.js';
import { BatchgenError } from '../shared/errors.js';
import type { KeyDiagnosis } from '../shared/key-health.js';
import type { ErrorRecord, ResultRecord } from '../shared/schemas.js';
import type { GenerationClient } from './client.js';
import { batchHealth } from './health.js';
import type { SubmitReport } from './submission.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A finished batch (completed, cancelled or failed): it changes no more. */
export const isTerminal = (s: BatchRecord['status']): boolean => FINISHED_STATUSES.includes(s);

export interface WaitOptions {
  /** Called whenever the counts or the status change. */
  onProgress?: (r: BatchRecord) => void;
  /**
   * Polling interval in ms.
   * @defaultValue 200
   */
  pollMs?: number;
  /**
   * Give up after this many ms, with a BatchgenError `generation_failed` (the batch goes on).
   * @defaultValue never
   */
  timeoutMs?: number;
}

/** A handle on one batch run: its status, results, errors and health, waiting, cancelling. */
export class BatchHandle {
  constructor(
    private readonly client: GenerationClient,
    readonly id: string,
    /** What the submission did (absent for a handle on an existing batch). */
    readonly report?: SubmitReport,
  ) {}

  /** The batch's record; rides out an outage of Redis (outageLimitMs). */
  async status(): Promise<BatchRecord> {
    const r = await this.client.patient(() => this.client.store.get(this.id));
    if (!r) throw new BatchgenError('invalid_request', `batch ${this.id} not found (unknown, or expired after its retention)`);
    return r;
  }

  /** Results in completion order; follows the batch until it is finished. */
  async *results(opts: { pollMs?: number } = {}): AsyncGenerator<ResultRecord> {
    for await (const s of this.settled(opts)) if (s.result) yield s.result;
  }

  /**
   * Settled requests (results and errors) in settlement order, from position `from` of the batch's
   * order list; follows the batch until it is finished. Each settled request comes once.
   */
  async *settled(opts: { pollMs?: number; from?: number } = {}): AsyncGenerator<Settled> {
    let offset = opts.from ?? 0;
    const order = this.client.keys.batch(this.id).order;
    const seen = new Set<string>();
    let atOffset: string | null = null;
    // one page of the order list, read again while Redis is unreachable
    const page = () =>
      this.client.patient(async () => {
        for await (const p of this.client.store.settledFrom(this.id, offset)) return p;
        return null;
      });
    const self = this;
    const drain = async function* (): AsyncGenerator<Settled> {
      // a Redis restart can lose the order list's last writes, which are then written again later in
      // it: when the position before the cursor changed, the list is read again (what came is skipped)
      if (offset > (opts.from ?? 0) && (await self.client.patient(() => self.client.redis.lindex(order, offset - 1))) !== atOffset)
        offset = opts.from ?? 0;
      for (let p = await page(); p !== null && p.next > offset; p = await page()) {
        offset = p.next;
        for (const e of p.entries) {
          if (seen.has(e.custom_id)) continue;
          seen.add(e.custom_id);
          yield e;
        }
      }
      if (offset > 0) atOffset = await self.client.patient(() => self.client.redis.lindex(order, offset - 1));
    };
    for (;;) {
      const rec = await this.status();
      yield* drain();
      // anything written between the status read and the last range
      if (isTerminal(rec.status)) {
        yield* drain();
        return;
      }
      await sleep(opts.pollMs ?? 200);
    }
  }

  /** Per compile key with pending requests: who holds it, or why no worker does (problem keys first; none once finished). */
  health(): Promise<KeyDiagnosis[]> {
    return this.client.io(() => batchHealth(this.client.redis, this.client.keys, this.client.store, this.id));
  }

  /** Failed requests and rejected lines, by line; rides out an outage of Redis. */
  errors(): Promise<ErrorRecord[]> {
    return this.client.patient(() => this.client.store.errors(this.id));
  }

  /** Waits until the batch is completed, cancelled or failed; rides out an outage of Redis (outageLimitMs). */
  async wait(opts: WaitOptions = {}): Promise<BatchRecord> {
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let last = '';
    for (;;) {
      const r = await this.status();
      const sig = `${r.status}:${r.counts.completed}:${r.counts.failed}:${r.counts.cancelled}:${r.counts.total}`;
      if (sig !== last) {
        last = sig;
        opts.onProgress?.(r);
      }
      if (isTerminal(r.status)) return r;
      if (Date.now() > deadline)
        throw new BatchgenError(
          'generation_failed',
          `batch ${this.id} not finished within ${opts.timeoutMs} ms (${r.counts.completed + r.counts.failed}/${r.counts.total} done)`,
        );
      await sleep(opts.pollMs ?? 200);
    }
  }

  cancel(): Promise<BatchRecord> {
    return this.client.cancel(this.id);
  }
}
