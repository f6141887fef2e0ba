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
 * A fixed fleet of n workers (ready at time 0, never stopped) in the worker's own mode, without an
 * autoscaler: every worker holds the keys that have work, keys with the fewest holders first, while
 * they fit its budget, giving up keys without work or arrivals to make room.
 */
export function fixedController(n: number, budgetBytes: number, bytesOf: (key: string) => number): Controller {
  return (state: ClusterState): Plan => {
    const holders = new Map<string, number>();
    const ids = Array.from({ length: n }, (_, i) => `w-${i + 1}`);
    const current = new Map(state.workers.map((w) => [w.id, w.assigned]));
    for (const keys of current.values()) for (const k of keys) holders.set(k, (holders.get(k) ?? 0) + 1);
    const idle = new Set(state.keys.filter((k) => k.backlog + k.active === 0 && k.arrivalRate === 0).map((k) => k.key));
    const workers: PlannedWorker[] = ids.map((id) => {
      const keys = [...(current.get(id) ?? [])];
      const withWork = state.keys
        .filter((k) => k.backlog + k.active > 0 && !keys.includes(k.key))
        .sort((a, b) => (holders.get(a.key) ?? 0) - (holders.get(b.key) ?? 0) || b.backlog - a.backlog || a.key.localeCompare(b.key));
      for (const k of withWork) {
        const used = () => keys.reduce((a, x) => a + bytesOf(x), 0);
        while (used() + bytesOf(k.key) > budgetBytes) {
          const out = keys.findIndex((x) => idle.has(x));
          if (out < 0) break;
          holders.set(keys[out], (holders.get(keys[out]) ?? 1) - 1);
          keys.splice(out, 1);
        }
        if (used() + bytesOf(k.key) > budgetBytes) continue;
        keys.push(k.key);
        holders.set(k.key, (holders.get(k.key) ?? 0) + 1);
      }
      return { id, keys, action: current.has(id) ? 'keep' : 'start' };
    });
    return { desired_workers: n, workers, reasons: [] };
  };
}
