/**
 * A discrete-event simulator of batchgen's workers under an autoscaling controller. Pure and
 * deterministic: the same trace, keys, controller and options give the same result.
 *
 * - Every `intervalSeconds` the controller sees a {@link ClusterState} (what the autoscaler reads
 *   from Redis) and returns a {@link Plan}, which the simulator applies: `start` creates a worker
 *   that is ready after `startSeconds` and then compiles its keys; `keep` changes a worker's keys
 *   (a new key is compiled before it serves it, a key taken away is dropped); `stop` removes a
 *   worker after the batch or compile in hand.
 * - A worker does one thing at a time (wasm is one thread per process): compile a key (its
 *   compileSeconds), or run a batch of up to the largest batch size from the held key whose oldest
 *   job waited longest, FIFO within the key. A batch of b jobs runs on the smallest allowed size
 *   B ≥ b, in `batchSeconds(key, B)`.
 * - A job's wait is from its arrival to the start of its batch. Worker-seconds run from a worker's
 *   start to its stop (or the horizon).
 */
import type { ClusterState, KeyState, Plan, WorkerState } from '../../src/autoscaler/types.js';

/** One compile key of the simulated system. */
export interface SimKey {
  key: string;
  model: string;
  /** seconds to compile and warm every batch size on one worker */
  compileSeconds: number;
  /** seconds one batch takes at each allowed batch size */
  batchSeconds: Record<number, number>;
  /** device bytes of its variants */
  bytes: number;
}

export interface Arrival {
  t: number;
  key: string;
}

/** A controller: called every interval with the state; may keep its own memory between calls. */
export type Controller = (state: ClusterState) => Plan;

export interface SimOptions {
  /** seconds between controller calls @defaultValue 5 (`--interval-s`) */
  intervalSeconds?: number;
  /** seconds from `start` to a worker able to compile @defaultValue 10 */
  startSeconds?: number;
  /** allowed batch sizes @defaultValue [1, 2, 4, 8] */
  batchSizes?: number[];
  /** seconds the simulation runs; jobs not started by then count as unserved @defaultValue last arrival + 900 */
  horizonSeconds?: number;
  /** window over which the arrival rate is measured @defaultValue 30 */
  rateWindowSeconds?: number;
  /** device bytes a worker may give to variants @defaultValue Infinity */
  budgetBytes?: number;
  /** models every worker loads @defaultValue the keys' models */
  models?: string[];
  /** workers present (started and ready, holding nothing) at time 0 @defaultValue [] */
  initialWorkers?: string[];
}

export interface SimResult {
  /** queue wait of each served job, in arrival order */
  waits: number[];
  unserved: number;
  workerSeconds: number;
  compiles: number;
  compileSeconds: number;
  peakWorkers: number;
  /** (time, live workers) after each controller call */
  timeline: [number, number][];
}

interface Job {
  t: number;
  key: string;
  index: number;
}

interface SimWorker {
  id: string;
  started: number;
  readyAt: number;
  assigned: string[];
  held: Set<string>;
  toCompile: string[];
  /** what it does until `busyUntil`: a compile of `doing`, a batch of `doing`, or nothing */
  task: 'compile' | 'batch' | null;
  doing: string | null;
  batchJobs: number;
  busyUntil: number;
  /** last time it finished a batch or a compile, or became ready */
  lastActive: number;
  stopping: boolean;
}

type EventBody = { t: number } & ({ kind: 'arrive'; job: Job } | { kind: 'tick' } | { kind: 'wake'; worker: string });
type Event = EventBody & { seq: number };

/** A binary heap of events ordered by (t, seq). */
class EventQueue {
  private h: Event[] = [];
  private seq = 0;
  push(e: EventBody): void {
    const ev = { ...e, seq: this.seq++ } as Event;
    const h = this.h;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p], h[i])) break;
      [h[p], h[i]] = [h[i], h[p]];
      i = p;
    }
  }
  pop(): Event | undefined {
    const h = this.h;
    if (h.length === 0) return undefined;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && less(h[l], h[m])) m = l;
        if (r < h.length && less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[m], h[i]] = [h[i], h[m]];
        i = m;
      }
    }
    return top;
  }
}

function less(a: Event, b: Event): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

/** Run one controller over one trace. */
export function simulate(keys: SimKey[], arrivals: Arrival[], controller: Controller, options: SimOptions = {}): SimResult {
  const interval = options.intervalSeconds ?? 5;
  const startSeconds = options.startSeconds ?? 10;
  const sizes = [...(options.batchSizes ?? [1, 2, 4, 8])].sort((a, b) => a - b);
  const bMax = sizes[sizes.length - 1];
  const lastArrival = arrivals.length > 0 ? arrivals[arrivals.length - 1].t : 0;
  const horizon = options.horizonSeconds ?? lastArrival + 900;
  const window = options.rateWindowSeconds ?? 30;
  const budget = options.budgetBytes ?? Number.POSITIVE_INFINITY;
  const byKey = new Map(keys.map((k) => [k.key, k]));
  const models = options.models ?? [...new Set(keys.map((k) => k.model))].sort();

  const queues = new Map<string, Job[]>(keys.map((k) => [k.key, []]));
  const seen = new Set<string>();
  const recent = new Map<string, number[]>(keys.map((k) => [k.key, []]));
  const served = new Set<string>();
  const compiled = new Set<string>();
  const active = new Map<string, number>(keys.map((k) => [k.key, 0]));
  const workers = new Map<string, SimWorker>();
  const waits: (number | null)[] = arrivals.map(() => null);
  let workerSeconds = 0;
  let compiles = 0;
  let compileSeconds = 0;
  let peakWorkers = 0;
  const timeline: [number, number][] = [];

  const events = new EventQueue();
  arrivals.forEach((a, index) => {
    events.push({ t: a.t, kind: 'arrive', job: { t: a.t, key: a.key, index } });
  });
  for (let t = 0; t <= horizon; t += interval) events.push({ t, kind: 'tick' });

  const newWorker = (id: string, now: number, keysOf: string[], readyAt: number): SimWorker => ({
    id,
    started: now,
    readyAt,
    assigned: [...keysOf],
    held: new Set(),
    toCompile: [...keysOf],
    task: null,
    doing: null,
    batchJobs: 0,
    busyUntil: readyAt,
    lastActive: readyAt,
    stopping: false,
  });
  for (const id of options.initialWorkers ?? []) workers.set(id, newWorker(id, 0, [], 0));

  const remove = (w: SimWorker, now: number) => {
    workerSeconds += Math.min(now, horizon) - w.started;
    workers.delete(w.id);
  };

  /** Give a free worker its next task, or leave it idle. */
  const kick = (w: SimWorker, now: number) => {
    if (w.task !== null || now < w.readyAt) return;
    if (w.stopping) return remove(w, now);
    const next = w.toCompile.shift();
    if (next !== undefined) {
      const c = byKey.get(next)!.compileSeconds;
      w.task = 'compile';
      w.doing = next;
      w.busyUntil = now + c;
      compiles++;
      compileSeconds += c;
      events.push({ t: w.busyUntil, kind: 'wake', worker: w.id });
      return;
    }
    let best: string | null = null;
    for (const k of [...w.held].sort()) {
      const q = queues.get(k)!;
      if (q.length > 0 && (best === null || q[0].t < queues.get(best)![0].t)) best = k;
    }
    if (best === null) return;
    const q = queues.get(best)!;
    const jobs = q.splice(0, bMax);
    for (const j of jobs) waits[j.index] = now - j.t;
    const B = sizes.find((s) => s >= jobs.length)!;
    w.task = 'batch';
    w.doing = best;
    w.batchJobs = jobs.length;
    w.busyUntil = now + byKey.get(best)!.batchSeconds[B];
    active.set(best, active.get(best)! + jobs.length);
    events.push({ t: w.busyUntil, kind: 'wake', worker: w.id });
  };

  /** The free workers holding a key, longest idle first (the first to block on the queue gets the job). */
  const kickHolders = (key: string, now: number) => {
    const free = [...workers.values()]
      .filter((w) => w.task === null && now >= w.readyAt && w.held.has(key))
      .sort((a, b) => a.lastActive - b.lastActive || (a.id < b.id ? -1 : 1));
    for (const w of free) {
      if (queues.get(key)!.length === 0) break;
      kick(w, now);
    }
  };

  const stateAt = (now: number): ClusterState => {
    const ks: KeyState[] = [];
    for (const k of keys) {
      if (!seen.has(k.key)) continue;
      const q = queues.get(k.key)!;
      const r = recent.get(k.key)!;
      while (r.length > 0 && r[0] <= now - window) r.shift();
      ks.push({
        key: k.key,
        model: k.model,
        backlog: q.length,
        active: active.get(k.key)!,
        arrivalRate: r.length / Math.min(window, Math.max(now, interval)),
        serviceRate: served.has(k.key) ? bMax / k.batchSeconds[bMax] : null,
        compileSeconds: compiled.has(k.key) ? k.compileSeconds : null,
        bytes: k.bytes,
        oldestAgeSeconds: q.length > 0 ? now - q[0].t : 0,
      });
    }
    const ws: WorkerState[] = [...workers.values()]
      .filter((w) => !w.stopping)
      .map((w) => ({
        id: w.id,
        assigned: [...w.assigned],
        held: [...w.held].sort(),
        state: now < w.readyAt ? 'starting' : w.task === 'compile' ? 'warming' : w.task === 'batch' ? 'busy' : 'idle',
        models,
        budgetBytes: budget,
        usedBytes: [...w.held].reduce((a, k) => a + byKey.get(k)!.bytes, 0),
        idleSeconds: w.task === null && now >= w.readyAt ? now - w.lastActive : 0,
        ageSeconds: now - w.started,
        pending: now < w.readyAt,
      }));
    return { now, keys: ks, workers: ws, models };
  };

  const apply = (plan: Plan, now: number) => {
    for (const p of plan.workers) {
      const w = workers.get(p.id);
      if (p.action === 'start') {
        if (w) continue;
        const nw = newWorker(p.id, now, p.keys, now + startSeconds);
        workers.set(p.id, nw);
        events.push({ t: nw.readyAt, kind: 'wake', worker: nw.id });
      } else if (!w) {
      } else if (p.action === 'stop') {
        w.stopping = true;
        kick(w, now);
      } else {
        const keep = new Set(p.keys);
        for (const k of w.held) if (!keep.has(k)) w.held.delete(k);
        w.toCompile = w.toCompile.filter((k) => keep.has(k));
        for (const k of p.keys) if (!w.held.has(k) && !w.toCompile.includes(k) && w.doing !== k) w.toCompile.push(k);
        if (w.task === 'compile' && w.doing !== null && !keep.has(w.doing)) w.doing = null; // its result is dropped
        w.assigned = [...p.keys];
        kick(w, now);
      }
    }
  };

  for (let e = events.pop(); e && e.t <= horizon; e = events.pop()) {
    const now = e.t;
    if (e.kind === 'arrive') {
      seen.add(e.job.key);
      recent.get(e.job.key)!.push(now);
      queues.get(e.job.key)!.push(e.job);
      kickHolders(e.job.key, now);
    } else if (e.kind === 'tick') {
      apply(controller(stateAt(now)), now);
      const live = [...workers.values()].filter((w) => !w.stopping).length;
      peakWorkers = Math.max(peakWorkers, live);
      timeline.push([now, live]);
    } else {
      const w = workers.get(e.worker);
      if (!w || now < w.busyUntil) continue;
      if (w.task === 'compile' && w.doing !== null) {
        w.held.add(w.doing);
        compiled.add(w.doing);
      } else if (w.task === 'batch' && w.doing !== null) {
        active.set(w.doing, active.get(w.doing)! - w.batchJobs);
        served.add(w.doing);
      }
      const wasWorking = w.task !== null || now === w.readyAt;
      w.task = null;
      w.doing = null;
      if (wasWorking) w.lastActive = now;
      kick(w, now);
    }
  }
  for (const w of [...workers.values()]) remove(w, horizon);
  return {
    waits: waits.filter((x): x is number => x !== null),
    unserved: waits.filter((x) => x === null).length,
    workerSeconds,
    compiles,
    compileSeconds,
    peakWorkers,
    timeline,
  };
}

/** The q-quantile (0..1) of xs, nearest rank; 0 for an empty list. */
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
