/**
 * Which compile keys a worker holds and releases, and what its /healthz says: pure decisions, made
 * from counts read in Redis (src/shared/registry.ts) and the worker's own state. Registry pruning:
 * prunableEntries in src/shared/registry.ts.
 *
 * A worker not given `--keys` holds the keys that have work, up to `maxKeys` and while its variants
 * fit the cache budget. When a key with work has no holder and no room is left, the worker releases
 * its idle keys, least recently served first (a key is idle when its queue has nothing waiting,
 * delayed or active and the worker holds no job of it). A key that still cannot be held is
 * *refused* for now and tried again at the next refresh.
 */

import { hasWork, type QueueWork } from '../shared/registry.js';

/** A key this worker holds. */
export interface HeldView {
  id: string;
  lastServedAt: number;
  /** device bytes of its variants */
  bytes: number;
  work: QueueWork;
  /** jobs of this key the worker has taken and not settled */
  inHand: number;
}

/** A key of this worker's models that it does not hold. */
export interface CandidateView {
  id: string;
  work: QueueWork;
  /** another live worker holds it */
  heldElsewhere: boolean;
}

export type RefusalReason = 'max_keys' | 'cache_budget';

export interface KeyPlanInput {
  held: HeldView[];
  /** in the order they should be served (oldest registry entry first) */
  candidates: CandidateView[];
  maxKeys: number;
  budgetBytes: number;
}

export interface KeyPlan {
  /** held keys to release first (their BullMQ workers closed, their variants disposed) */
  release: string[];
  /** keys to compile and hold, in order (the budget is checked again with real bytes before each) */
  hold: string[];
  /** keys with work that cannot be held now */
  refused: { id: string; reason: RefusalReason }[];
}

export const isIdle = (h: HeldView): boolean => h.inHand === 0 && !hasWork(h.work);

/**
 * A candidate needs a holder when jobs wait for it (waiting or delayed), or when its active jobs
 * have no live holder (only a holder's stalled check gives jobs of a dead worker back).
 */
export function needsHolder(c: CandidateView): boolean {
  return c.work.waiting + c.work.delayed > 0 || (c.work.active > 0 && !c.heldElsewhere);
}

/** What to release and hold now. Held keys are only released to make room for a key that needs a holder and has none. */
export function planKeys(input: KeyPlanInput): KeyPlan {
  const plan: KeyPlan = { release: [], hold: [], refused: [] };
  let count = input.held.length;
  let bytes = input.held.reduce((s, h) => s + h.bytes, 0);
  const idle = input.held.filter(isIdle).sort((a, b) => a.lastServedAt - b.lastServedAt || (a.id < b.id ? -1 : 1));
  const fits = (n: number, b: number) => n < input.maxKeys && b < input.budgetBytes;
  for (const c of input.candidates) {
    if (!needsHolder(c)) continue;
    if (fits(count, bytes)) {
      plan.hold.push(c.id);
      count += 1;
      continue;
    }
    if (c.heldElsewhere) continue; // served elsewhere: no key is given up for it
    // release idle keys, least recently served first, only if that makes room
    let n = count;
    let b = bytes;
    let k = 0;
    while (!fits(n, b) && k < idle.length) {
      n -= 1;
      b -= idle[k].bytes;
      k += 1;
    }
    if (fits(n, b)) {
      plan.release.push(...idle.splice(0, k).map((h) => h.id));
      plan.hold.push(c.id);
      count = n + 1;
      bytes = b;
    } else {
      plan.refused.push({ id: c.id, reason: count >= input.maxKeys ? 'max_keys' : 'cache_budget' });
    }
  }
  return plan;
}

/** What a worker's /healthz says. */
export interface WorkerHealth {
  ok: boolean;
  problems: { key: string; problem: 'compile_failed' | 'refused'; reason: string; waiting: number }[];
}

/**
 * Not ok when the worker failed to compile a key that has waiting work, or refuses a key with
 * waiting work that it cannot hold (max keys or the cache budget, with nothing idle to release).
 */
export function workerHealth(
  compileFailed: { key: string; error: string; work: QueueWork }[],
  refused: { key: string; reason: RefusalReason; work: QueueWork }[],
): WorkerHealth {
  const problems: WorkerHealth['problems'] = [];
  for (const f of compileFailed) {
    const waiting = f.work.waiting + f.work.delayed;
    if (waiting > 0) problems.push({ key: f.key, problem: 'compile_failed', reason: f.error, waiting });
  }
  for (const r of refused) {
    const waiting = r.work.waiting + r.work.delayed;
    if (waiting > 0)
      problems.push({
        key: r.key,
        problem: 'refused',
        reason: r.reason === 'max_keys' ? 'max keys reached, no idle key to release' : 'cache budget full, no idle key to release',
        waiting,
      });
  }
  return { ok: problems.length === 0, problems };
}

/** Loop iterations in a row that ended in an error, and the last one's message. */
export interface LoopErrors {
  consecutive: number;
  last: string | null;
}

/** The loop's part of /healthz. */
export type LoopHealth = { ok: true } | { ok: false; consecutive_errors: number; reason: string };

/**
 * Not ok once `threshold` loop iterations in a row ended in an error (Redis calls that keep
 * failing, say): such a worker serves nothing, however healthy its keys look. One good iteration
 * resets the count.
 */
export function loopHealth(errors: LoopErrors, threshold: number): LoopHealth {
  if (errors.consecutive < threshold) return { ok: true };
  return {
    ok: false,
    consecutive_errors: errors.consecutive,
    reason: `the worker loop failed ${errors.consecutive} times in a row; last error: ${errors.last ?? 'unknown'}`,
  };
}

/** The keys' health with the loop's: not ok if either is not; a failing loop adds `loop` to the answer. */
export function withLoopHealth(keys: WorkerHealth, loop: LoopHealth): WorkerHealth & { loop?: LoopHealth } {
  return loop.ok ? keys : { ...keys, ok: false, loop };
}

/** What an assigned worker (`--assigned`) does with its assignment set at a refresh. */
export interface AssignedPlan {
  /** held keys no longer assigned: released (refresh runs only with no job in hand) */
  release: string[];
  /** assigned keys not held, in the set's order: compiled, then held (budget permitting) */
  hold: string[];
  /** assigned keys this worker cannot hold: not a key id, or a model it has not loaded */
  foreign: string[];
}

/**
 * An assigned worker holds exactly its assignment: every held key not in it is released, every
 * assigned key of a model it loaded and not held is held. Duplicates count once.
 */
export function planAssigned(held: readonly string[], assigned: readonly string[], servable: (id: string) => boolean): AssignedPlan {
  const wanted = [...new Set(assigned)];
  const want = new Set(wanted);
  const have = new Set(held);
  return {
    release: held.filter((id) => !want.has(id)),
    hold: wanted.filter((id) => !have.has(id) && servable(id)),
    foreign: wanted.filter((id) => !servable(id)),
  };
}
