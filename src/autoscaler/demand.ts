/**
 * Per-key demand and per-worker keep-alive: the arithmetic the policy (policy.ts) is built on, pure.
 *
 * Demand is counted in worker-units: 1 is one warm worker busy all the time on that key. A key's
 * demand is what serves its arrivals plus what clears its backlog within the target wait.
 */
import type { KeyState, PolicySettings } from './types.js';

/** Float slack for ceilings: a demand of 2.0000000001 workers is 2. */
const EPS = 1e-9;

/** One key's demand, with the measured or assumed numbers it came from. */
export interface KeyDemand {
  key: KeyState;
  /** jobs/s one warm worker serves on this key (measured, else the default) */
  serviceRate: number;
  /** seconds to compile and warm this key on a worker (measured, else the default) */
  compileSeconds: number;
  /** device bytes of the key's variants; 0 when unknown (the worker's cache still bounds itself) */
  bytes: number;
  /** worker-units: (arrivalRate + backlog / targetWaitSeconds) / serviceRate */
  load: number;
  /** runnable or running jobs: the key must have a holder */
  work: boolean;
  /** work, or arrivals: its holders are serving it */
  inUse: boolean;
}

/** The demand of one key under the settings. */
export function keyDemand(key: KeyState, settings: PolicySettings): KeyDemand {
  const serviceRate = key.serviceRate !== null && key.serviceRate > 0 ? key.serviceRate : settings.defaultServiceRate;
  const compileSeconds = key.compileSeconds ?? settings.defaultCompileSeconds;
  const rate = Math.max(0, key.arrivalRate) + Math.max(0, key.backlog) / settings.targetWaitSeconds;
  const work = key.backlog > 0 || key.active > 0;
  return {
    key,
    serviceRate,
    compileSeconds,
    bytes: key.bytes ?? 0,
    load: rate / serviceRate,
    work,
    inUse: work || key.arrivalRate > 0,
  };
}

/** Holders a load needs: ceil(load), and at least one when the key has work. */
export function holdersFor(d: KeyDemand, utilization = 1): number {
  const n = Math.ceil(d.load / utilization - EPS);
  return d.work ? Math.max(1, n) : Math.max(0, n);
}

/**
 * Holders to aim for when `current` already hold the key. At least {@link holdersFor}; but a holder
 * added only to clear backlog is not worth it when the current holders keep up with the arrivals
 * and clear the backlog before a new holder would have compiled the key.
 */
export function targetHolders(d: KeyDemand, current: number): { target: number; drainsFirst: boolean } {
  const want = holdersFor(d);
  if (want <= current || current === 0) return { target: Math.max(want, current), drainsFirst: false };
  const capacity = current * d.serviceRate;
  const spare = capacity - Math.max(0, d.key.arrivalRate);
  if (spare > 0 && d.key.backlog / spare <= d.compileSeconds) return { target: current, drainsFirst: true };
  return { target: want, drainsFirst: false };
}

/**
 * How long an idle, drained worker holding keys of these compile seconds waits before it stops:
 * `settings.idleSeconds` when set, else the sum of the compile seconds (what bringing them back
 * would cost) clamped to [minIdleSeconds, maxIdleSeconds].
 */
export function keepAliveSeconds(compileSeconds: number[], settings: PolicySettings): { keepAlive: number; compile: number } {
  const compile = compileSeconds.reduce((a, b) => a + b, 0);
  if (settings.idleSeconds !== null) return { keepAlive: settings.idleSeconds, compile };
  return { keepAlive: Math.min(settings.maxIdleSeconds, Math.max(settings.minIdleSeconds, compile)), compile };
}
