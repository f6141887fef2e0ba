/**
 * Graceful shutdown: the first SIGTERM or SIGINT asks the worker to stop (stop pulling, finish the
 * batch in hand, close); a second signal, or a stop that takes longer than `forceAfterMs` (the
 * worker's `--shutdown-timeout-s`), exits at once (held jobs then stall and are delivered again elsewhere: nothing is lost).
 */
import type { Logger } from '../observability/logger.js';

/** How a stop of `shutdownTimeoutMs` is shared: finishing the batch in hand, then closing (the rest is a margin before the exit). */
export function stopBudget(shutdownTimeoutMs: number): { finishMs: number; closeMs: number } {
  const closeMs = Math.min(5000, shutdownTimeoutMs / 4);
  const marginMs = Math.min(1000, shutdownTimeoutMs / 10);
  return { finishMs: Math.max(0, shutdownTimeoutMs - closeMs - marginMs), closeMs };
}

export interface ShutdownOptions {
  /** Exit anyway this long after the first signal (the worker's shutdownTimeoutMs). Default 30000 ms. */
  forceAfterMs?: number;
  log?: Logger;
  /** Default process.exit. */
  exit?: (code: number) => void;
}

/** Installs the handlers; returns a function that removes them. */
export function handleShutdown(stop: (signal: string) => Promise<void>, opts: ShutdownOptions = {}): () => void {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      opts.log?.warn({ signal }, 'second signal: exiting now');
      exit(1);
      return;
    }
    stopping = true;
    opts.log?.info({ signal }, 'stopping: no more jobs taken, finishing the batch in hand');
    const timer = setTimeout(() => {
      opts.log?.error({ forceAfterMs: opts.forceAfterMs ?? 30_000 }, 'stop took longer than the shutdown timeout: exiting now');
      exit(1);
    }, opts.forceAfterMs ?? 30_000);
    timer.unref();
    stop(signal).then(
      () => {
        clearTimeout(timer);
        exit(0);
      },
      (e: unknown) => {
        clearTimeout(timer);
        opts.log?.error({ err: e }, 'error while stopping');
        exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return () => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  };
}
