/** `status --watch`: follows a batch until it is finished, one line rewritten in place on a terminal, else one line per change. */
import type { BatchRecord } from '../shared/batch-store.js';
import { type BatchHandle, isTerminal } from '../producer/batch-handle.js';
import { progressBar, progressWrite } from './common.js';

/** The one-line status of a batch while it is watched. */
export function watchLine(r: BatchRecord): string {
  const c = r.counts;
  const done = c.completed + c.failed + c.cancelled;
  return `batch ${r.id}: ${r.status} ${progressBar(done, c.total)} (${c.completed} completed, ${c.failed} failed, ${c.cancelled} cancelled)`;
}

export interface WatchOptions {
  write: (text: string) => Promise<void>;
  tty: boolean;
  /** Default 1000 ms. */
  intervalMs?: number;
}

/** Refreshes until the batch is finished; resolves with its last record. */
export async function watchBatch(handle: BatchHandle, opts: WatchOptions): Promise<BatchRecord> {
  let shown: string | null = null;
  for (;;) {
    const r = await handle.status();
    const line = watchLine(r);
    await opts.write(progressWrite(shown, line, opts.tty));
    shown = line;
    if (isTerminal(r.status)) {
      if (opts.tty) await opts.write('\n');
      return r;
    }
    await new Promise((res) => setTimeout(res, opts.intervalMs ?? 1000));
  }
}
