/**
 * The controllers compared by `npm run bench:autoscale`: this project's policy and the usual
 * alternatives, each a function from the cluster state to a plan (their memory kept in closures).
 */
import { decide } from '../../src/autoscaler/policy.js';
import type { ClusterState, Plan, PlannedWorker, PolicySettings } from '../../src/autoscaler/types.js';
import type { Controller } from './simulator.js';

/** batchgen's compile-aware policy. */
export function policyController(settings: PolicySettings): Controller {
  return (state) => decide(state, settings);
}

/** Max of the values seen over the last `windowSeconds` (the HPA's scale-down stabilization). */
function stabilizer(windowSeconds: number) {
  const seen: [number, number][] = [];
  return (now: number, value: number): number => {
    seen.push([now, value]);
    while (seen.length > 0 && seen[0][0] <= now - windowSeconds) seen.shift();
    return Math.max(...seen.map(([, v]) => v));
  };
}

/**
 * KEDA-like: one ScaledObject per key, replicas = ceil(waiting / target) with target = the jobs
 * one replica clears in the target wait; up at once, down (and to zero) only after `cooldownSeconds`
 * of lower demand; each replica holds only its key, so each one compiles it.
 */
export function kedaController(o: {
  targetWaitSeconds: number;
  cooldownSeconds: number;
  maxReplicas: number;
  defaultServiceRate: number;
}): Controller {
  const windows = new Map<string, ReturnType<typeof stabilizer>>();
  return (state) => {
    const workers: PlannedWorker[] = [];
    const reasons: string[] = [];
    state.keys.forEach((k, ki) => {
      const target = Math.max(1, (k.serviceRate ?? o.defaultServiceRate) * o.targetWaitSeconds);
      const want = Math.min(o.maxReplicas, Math.ceil((k.backlog + k.active) / target));
      if (!windows.has(k.key)) windows.set(k.key, stabilizer(o.cooldownSeconds));
      const replicas = windows.get(k.key)!(state.now, want);
      const mine = state.workers
        .filter((w) => w.id.startsWith(`k${ki}-`))
        .sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true }));
      mine.forEach((w, i) => workers.push({ id: w.id, keys: [k.key], action: i < replicas ? 'keep' : 'stop' }));
      const used = new Set(mine.map((w) => w.id));
      let n = 0;
      for (let i = mine.length; i < replicas; i++) {
        while (used.has(`k${ki}-${n}`)) n++;
        used.add(`k${ki}-${n}`);
        workers.push({ id: `k${ki}-${n}`, keys: [k.key], action: 'start' });
      }
    });
    return { desired_workers: workers.filter((w) => w.action !== 'stop').length, workers, reasons };
  };
}

/**
 * HPA-like pool: replicas = ceil(total waiting / target), up at once, down after a stabilization
 * window; every interval the keys with work are handed out round-robin by backlog, and a worker
 * compiles whatever key it is given.
 */
export function hpaController(o: {
  targetWaitSeconds: number;
  windowSeconds: number;
  maxReplicas: number;
  serviceRate: number;
}): Controller {
  const window = stabilizer(o.windowSeconds);
  let next = 0;
  return (state) => {
    const waiting = state.keys.reduce((a, k) => a + k.backlog + k.active, 0);
    const replicas = window(state.now, Math.min(o.maxReplicas, Math.ceil(waiting / (o.serviceRate * o.targetWaitSeconds))));
    const current = state.workers.map((w) => w.id).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    const keep = current.slice(0, replicas);
    const ids = [...keep];
    while (ids.length < replicas) ids.push(`h-${next++}`);
    const withWork = state.keys.filter((k) => k.backlog + k.active > 0).sort((a, b) => b.backlog - a.backlog || a.key.localeCompare(b.key));
    const keysOf = (i: number) => withWork.filter((_, j) => j % Math.max(1, ids.length) === i).map((k) => k.key);
    const workers: PlannedWorker[] = [
      ...ids.map((id, i): PlannedWorker => ({ id, keys: keysOf(i), action: keep.includes(id) ? 'keep' : 'start' })),
      ...current.slice(replicas).map((id): PlannedWorker => ({ id, keys: [], action: 'stop' })),
    ];
    return { desired_workers: ids.length, workers, reasons: [] };
  };
}

/**
 * A fixed fleet of n workers (started at time 0, never stopped), keys placed by the same policy
 * with min = max = n: the same placement, no scaling.
 */
export function fixedController(n: number, settings: PolicySettings): Controller {
  const s = { ...settings, minWorkers: n, maxWorkers: n };
  return (state: ClusterState): Plan => decide(state, s);
}
