/**
 * The pieces of a bounded stop: named steps run in order, each failure logged with its name, and a
 * deadline past which a step is no longer waited for.
 */
import type { Logger } from '../observability/logger.js';

/** Whether `what` settled before the deadline (its failure counts as settled: the caller logs it). */
export function settledBefore(deadline: number, what: Promise<unknown> | null | undefined): Promise<boolean> {
  if (!what) return Promise.resolve(true);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => {
    timer = setTimeout(() => r(false), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([
    what.then(
      () => true,
      () => true,
    ),
    late,
  ]).finally(() => clearTimeout(timer));
}

/** Runs each step whatever the others did; a failing one is logged as `stop: could not <name>`, a late one as given up. */
export async function runSteps(
  log: Logger,
  steps: [name: string, run: () => unknown][],
  deadline = Number.POSITIVE_INFINITY,
): Promise<void> {
  for (const [name, run] of steps) {
    try {
      const p = Promise.resolve().then(run);
      if (deadline === Number.POSITIVE_INFINITY) await p;
      else if (!(await settledBefore(deadline, p))) log.warn({ step: name }, `stop: gave up waiting to ${name}`);
      else await p.catch((e: Error) => log.warn({ step: name, err: e.message }, `stop: could not ${name}`));
    } catch (e) {
      log.warn({ step: name, err: (e as Error).message }, `stop: could not ${name}`);
    }
  }
}
