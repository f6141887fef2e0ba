/**
 * Failures injected on purpose, for tests and drills only (BATCHGEN_FAULTS, a JSON object). Never
 * set in production. The worker calls these hooks at the points where real failures happen: a
 * compile, and a batch about to run.
 */
import type { Logger } from '../observability/logger.js';

/** What BATCHGEN_FAULTS may ask for. */
export interface Faults {
  /** a batch holding one of these custom_ids throws */
  throwOn?: string[];
  /** a batch holding one of these custom_ids kills the process (SIGKILL) */
  killOn?: string[];
  /** extra time each variant's compile takes, blocking the event loop */
  compileDelayMs?: number;
  /** extra time each batch takes, yielding to the event loop */
  runDelayMs?: number;
  /** the compile of these key ids fails */
  compileFailOn?: string[];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The faults of BATCHGEN_FAULTS (none when unset). Throws naming the value when it is not JSON. */
export function faultsFromEnv(raw = process.env.BATCHGEN_FAULTS): Faults {
  if (!raw) return {};
  try {
    return JSON.parse(raw) as Faults;
  } catch {
    throw new Error(`BATCHGEN_FAULTS is not JSON: ${raw}`);
  }
}

/** Before a key compiles: throws when its compile is to fail. */
export function beforeCompile(faults: Faults, keyId: string): void {
  if (faults.compileFailOn?.includes(keyId)) throw new Error('fault injection: this key does not compile');
}

/** After each variant compiles: blocks the event loop, as a long synchronous compile would. */
export function afterVariantCompile(faults: Faults): void {
  if (!faults.compileDelayMs) return;
  const until = Date.now() + faults.compileDelayMs;
  while (Date.now() < until) {
    // busy on purpose
  }
}

/** Before a batch of these custom_ids runs: kill the process, delay (yielding), or throw. */
export async function beforeRun(faults: Faults, customIds: string[], log: Logger, key: string): Promise<void> {
  if (faults.killOn?.some((c) => customIds.includes(c))) {
    log.warn({ key }, 'fault injection: killing the process mid-batch');
    process.kill(process.pid, 'SIGKILL');
    await sleep(10_000);
  }
  if (faults.runDelayMs) {
    const until = Date.now() + faults.runDelayMs;
    while (Date.now() < until) await sleep(Math.min(50, until - Date.now()));
  }
  if (faults.throwOn?.some((c) => customIds.includes(c))) throw new Error('fault injection: this batch fails');
}
