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
  /** worker-units: (arrivalRate + backlog / (targetWaitSeconds + compileSeconds)) / serviceRate */
  load: number;
  /** runnable or running jobs: the key must have a holder */
  work: boolean;
  /** work, or arrivals: its holders are serving it */
  inUse: boolean;
  /** worker-units of the arrivals alone: the load that lasts, without the backlog being cleared */
  sustained: number;
}

/** What an unmeasured key is assumed to cost: the median of the measured keys, else the defaults. */
export interface Assumed {
  serviceRate: number;
  compileSeconds: number;
}

/**
 * Numbers for keys not measured yet: the median over the keys that are (same hardware, similar
 * models), and the settings' defaults when none is.
 */
export function assumedFor(keys: KeyState[], settings: PolicySettings): Assumed {
  const rates = keys.map((k) => k.serviceRate).filter((x): x is number => x !== null && x > 0);
  const compiles = keys.map((k) => k.compileSeconds).filter((x): x is number => x !== null);
  return {
    serviceRate: rates.length > 0 ? median(rates) : settings.defaultServiceRate,
    compileSeconds: compiles.length > 0 ? median(compiles) : settings.defaultCompileSeconds,
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The demand of one key under the settings; `assumed` stands in for what is not measured. */
export function keyDemand(
  key: KeyState,
  settings: PolicySettings,
  assumed: Assumed = { serviceRate: settings.defaultServiceRate, compileSeconds: settings.defaultCompileSeconds },
): KeyDemand {
  const serviceRate = key.serviceRate !== null && key.serviceRate > 0 ? key.serviceRate : assumed.serviceRate;
  const compileSeconds = key.compileSeconds ?? assumed.compileSeconds;
  // A holder added now serves only once it has compiled the key: the backlog is cleared over the
  // target wait plus that compile, not over the target wait alone (which would start a crowd of
  // workers for a backlog that the first of them have cleared before the rest are ready).
  const rate = Math.max(0, key.arrivalRate) + Math.max(0, key.backlog) / (settings.targetWaitSeconds + compileSeconds);
  const work = key.backlog > 0 || key.active > 0;
  return {
    key,
    serviceRate,
    compileSeconds,
    bytes: key.bytes ?? 0,
    load: rate / serviceRate,
    work,
    inUse: work || key.arrivalRate > 0,
    sustained: Math.max(0, key.arrivalRate) / serviceRate,
  };
}

/** Holders a load needs: ceil(load), and at least one when the key has work. */
export function holdersFor(d: KeyDemand, utilization = 1): number {
  const n = Math.ceil(d.load / utilization - EPS);
  return d.work ? Math.max(1, n) : Math.max(0, n);
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
