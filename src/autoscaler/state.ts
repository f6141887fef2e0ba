/**
 * The cluster as the autoscaler sees it (a ClusterState, types.ts), read from Redis once per pass:
 * the registry of keys; per key its runnable backlog (waiting + prioritized + delayed that is due),
 * active jobs, oldest runnable job and arrival counter; the heartbeats of assigned workers; the
 * assignment sets. Reading (StateReader.read) is I/O only; what the reads mean (assembleState) is a
 * pure function of them.
 *
 * A worker is in the state when its heartbeat is live (not expired, not `stopped`) or when the
 * driver runs it (then, until it writes a live heartbeat, it is `pending`: a `stopped` record under
 * its id is an earlier run's, as ids are reused). A worker with neither is gone:
 * its assignment set is returned in `gone`, for the loop to delete, so that its keys are assigned
 * again. Workers started without `--assigned` are not the autoscaler's and are left out.
 */
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { readAssignments } from '../shared/assignments.js';
import type { CompileKey } from '../shared/compile-key.js';
import { readHeartbeats } from '../shared/heartbeats.js';
import type { Keyspace } from '../shared/keys.js';
import { DEFAULT_VARIANT_BUDGET_BYTES } from '../shared/memory.js';
import { readRegistry } from '../shared/registry.js';
import type { ClusterState, KeyState, WorkerRunState, WorkerState } from './types.js';

/** The part of a worker heartbeat (src/worker/heartbeat.ts) the autoscaler reads; parsed, as Redis is untrusted. */
export const AutoscalerHeartbeat = z
  .object({
    id: z.string(),
    state: z.string(),
    models: z.array(z.string()).default([]),
    keys: z.array(z.string()).default([]),
    compile_failed: z.array(z.object({ key: z.string() }).loose()).default([]),
    refused: z.array(z.object({ key: z.string() }).loose()).default([]),
    assigned: z.boolean().default(false),
    compile_s: z.record(z.string(), z.number().nonnegative()).default({}),
    service: z
      .record(z.string(), z.object({ jobs_per_s: z.number().nonnegative(), tokens_per_s: z.number().nonnegative() }).loose())
      .default({}),
    key_bytes: z.record(z.string(), z.number().nonnegative()).default({}),
    budget_bytes: z.number().nonnegative().default(0),
    used_bytes: z.number().nonnegative().default(0),
    idle_ms: z.number().nonnegative().default(0),
    started_at: z.number().default(0),
    updated_at: z.number().default(0),
  })
  .loose();
export type AutoscalerHeartbeat = z.infer<typeof AutoscalerHeartbeat>;

/** What was read of one key's queue. */
export interface KeyRead {
  id: string;
  key: CompileKey;
  waiting: number;
  prioritized: number;
  /** delayed jobs whose time has come (score ≤ now) */
  delayedDue: number;
  active: number;
  /** the producer's arrival counter (jobs ever enqueued); 0 when absent */
  arrivals: number;
  /** creation time (ms) of the oldest runnable job, null when none */
  oldestAt: number | null;
}

/** One pass of reads. */
export interface RawState {
  /** ms since the epoch, when the reads began */
  now: number;
  keys: KeyRead[];
  heartbeats: AutoscalerHeartbeat[];
  /** worker id → keys of its assignment set */
  assignments: ReadonlyMap<string, readonly string[]>;
  /** ids of the workers the driver runs */
  running: readonly string[];
}

/** The arrival counters of a pass, kept to compute the next pass's rates. */
export interface ArrivalSample {
  at: number;
  counts: ReadonlyMap<string, number>;
}

export interface AssembledState {
  state: ClusterState;
  /** workers with an assignment set that are gone (no live heartbeat, not run by the driver) */
  gone: string[];
  sample: ArrivalSample;
}

/** The median of the numbers (null for none). */
export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Jobs per second between two counter reads; 0 without a previous read, or when the counter went back (reset). */
export function arrivalRate(prev: ArrivalSample | null, id: string, count: number, now: number): number {
  if (!prev) return 0;
  const dt = (now - prev.at) / 1000;
  const before = prev.counts.get(id);
  if (!(dt > 0) || before === undefined || count < before) return 0;
  return (count - before) / dt;
}

const RUN_STATES: Record<string, WorkerRunState> = {
  idle: 'idle',
  collecting: 'busy',
  running: 'busy',
  settling: 'busy',
  draining: 'draining',
  stopped: 'stopped',
};

/** A worker's run state: `warming` while it is idle and an assigned key is neither held, refused nor failed. */
export function runState(h: AutoscalerHeartbeat, assigned: readonly string[]): WorkerRunState {
  const s = RUN_STATES[h.state] ?? 'idle';
  if (s !== 'idle') return s;
  const settled = new Set([...h.keys, ...h.refused.map((r) => r.key), ...h.compile_failed.map((f) => f.key)]);
  return assigned.some((k) => !settled.has(k)) ? 'warming' : 'idle';
}

/** The ClusterState of one pass of reads (pure). `models`: what a new worker loads. */
export function assembleState(raw: RawState, prev: ArrivalSample | null, models: readonly string[]): AssembledState {
  const now = raw.now;
  const modelSet = new Set(models);
  const live = raw.heartbeats.filter((h) => h.state !== 'stopped');
  const heartbeatOf = new Map(raw.heartbeats.map((h) => [h.id, h]));
  const running = new Set(raw.running);
  const keys: KeyState[] = raw.keys
    .filter((k) => modelSet.has(k.key.model))
    .map((k) => ({
      key: k.id,
      model: k.key.model,
      backlog: k.waiting + k.prioritized + k.delayedDue,
      active: k.active,
      arrivalRate: arrivalRate(prev, k.id, k.arrivals, now),
      serviceRate: median(live.flatMap((h) => (h.service[k.id] ? [h.service[k.id].jobs_per_s] : []))),
      compileSeconds: median(raw.heartbeats.flatMap((h) => (h.compile_s[k.id] !== undefined ? [h.compile_s[k.id]] : []))),
      bytes: median(live.flatMap((h) => (h.key_bytes[k.id] !== undefined ? [h.key_bytes[k.id]] : []))),
      oldestAgeSeconds: k.oldestAt === null ? 0 : Math.max(0, (now - k.oldestAt) / 1000),
    }));
  const defaultBudget =
    median(live.filter((h) => h.assigned && h.budget_bytes > 0).map((h) => h.budget_bytes)) ?? DEFAULT_VARIANT_BUDGET_BYTES;
  const ids = new Set<string>([...live.filter((h) => h.assigned).map((h) => h.id), ...raw.assignments.keys(), ...running]);
  const workers: WorkerState[] = [];
  const gone: string[] = [];
  for (const id of [...ids].sort()) {
    const h = heartbeatOf.get(id);
    const assigned = [...(raw.assignments.get(id) ?? [])];
    const isLive = h !== undefined && h.state !== 'stopped';
    if (!isLive && !running.has(id)) {
      if (raw.assignments.has(id)) gone.push(id);
      continue;
    }
    // run by the driver with no live heartbeat: not written yet (a stopped one is a previous run's)
    if (!isLive) {
      workers.push({
        id,
        assigned,
        held: [],
        state: 'starting',
        models: [...models],
        budgetBytes: defaultBudget,
        usedBytes: 0,
        idleSeconds: 0,
        ageSeconds: 0,
        pending: true,
      });
      continue;
    }
    const state = runState(h, assigned);
    const sinceBeat = Math.max(0, now - h.updated_at);
    workers.push({
      id,
      assigned,
      held: [...h.keys],
      state,
      models: [...h.models],
      budgetBytes: h.budget_bytes || defaultBudget,
      usedBytes: h.used_bytes,
      idleSeconds: state === 'busy' ? 0 : (h.idle_ms + sinceBeat) / 1000,
      ageSeconds: h.started_at > 0 ? Math.max(0, (now - h.started_at) / 1000) : 0,
    });
  }
  return {
    state: { now: now / 1000, keys, workers, models: [...models] },
    gone,
    sample: { at: now, counts: new Map(raw.keys.map((k) => [k.id, k.arrivals])) },
  };
}

/** BullMQ's delayed score of a time: `ms * 0x1000` plus a counter below 0x1000 (includes/getDelayedScore.lua). */
export const delayedScoreUpTo = (ms: number): number => (ms + 1) * 0x1000 - 1;

/** Reads the raw state of every registry key and the workers. */
export async function readRawState(redis: Redis, keys: Keyspace, running: readonly string[]): Promise<RawState> {
  const now = Date.now();
  const entries = await readRegistry(redis, keys);
  const due = delayedScoreUpTo(now);
  const p = redis.pipeline();
  for (const e of entries) {
    const q = keys.queue(e.key);
    p.llen(q.waitList)
      .zcard(q.prioritizedSet)
      .zcount(q.delayedSet, 0, due)
      .llen(q.activeList)
      .get(keys.arrivals(e.id))
      // the oldest runnable job of each kind: wait is LPUSHed and taken from its tail
      .lindex(q.waitList, -1)
      .zrange(q.prioritizedSet, '0', '0')
      .zrangebyscore(q.delayedSet, 0, due, 'LIMIT', '0', '1');
  }
  const res = (await p.exec()) ?? [];
  const at = (i: number): unknown => {
    const [err, v] = res[i] ?? [null, null];
    if (err) throw err;
    return v;
  };
  const PER = 8;
  const oldestIds = entries.map((_, i) => {
    const b = i * PER;
    return [at(b + 5), ...((at(b + 6) as string[] | null) ?? []), ...((at(b + 7) as string[] | null) ?? [])].filter(
      (x): x is string => typeof x === 'string',
    );
  });
  const tp = redis.pipeline();
  entries.forEach((e, i) => {
    const q = keys.queue(e.key);
    for (const id of oldestIds[i]) tp.hget(q.job(id), 'timestamp');
  });
  const stamps = oldestIds.some((l) => l.length > 0) ? ((await tp.exec()) ?? []) : [];
  let s = 0;
  const reads: KeyRead[] = entries.map((e, i) => {
    const b = i * PER;
    const times: number[] = [];
    for (let j = 0; j < oldestIds[i].length; j++, s++) {
      const t = Number(stamps[s]?.[1]);
      if (Number.isFinite(t) && t > 0) times.push(t);
    }
    return {
      id: e.id,
      key: e.key,
      waiting: Number(at(b)),
      prioritized: Number(at(b + 1)),
      delayedDue: Number(at(b + 2)),
      active: Number(at(b + 3)),
      arrivals: Number(at(b + 4) ?? 0) || 0,
      oldestAt: times.length ? Math.min(...times) : null,
    };
  });
  const heartbeats: AutoscalerHeartbeat[] = [];
  for (const h of await readHeartbeats(redis, keys)) {
    const r = AutoscalerHeartbeat.safeParse(h);
    if (r.success) heartbeats.push(r.data);
  }
  return { now, keys: reads, heartbeats, assignments: await readAssignments(redis, keys), running };
}

/** Reads the state pass after pass, keeping the arrival counters between passes for the rates. */
export class StateReader {
  private prev: ArrivalSample | null = null;

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keyspace,
    private readonly models: readonly string[],
  ) {}

  async read(running: readonly string[]): Promise<AssembledState> {
    const raw = await readRawState(this.redis, this.keys, running);
    const out = assembleState(raw, this.prev, this.models);
    this.prev = out.sample;
    return out;
  }
}
