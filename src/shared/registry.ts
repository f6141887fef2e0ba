/**
 * The registry of compile keys (`Keyspace.registry()`: a hash, key id → JSON {model, P, N, strategy,
 * updated_at}), written by producers when they enqueue and read by workers, and the work in each
 * key's queue. Entries of keys with no work and no enqueue for a while (DEFAULT_REGISTRY_TTL_MS) are
 * pruned by workers, atomically: an entry whose queue holds a job, or that a producer wrote after
 * the cutoff, is never removed.
 */
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { parseKeyId, type CompileKey } from './compile-key.js';
import type { Keyspace } from './keys.js';

/** Jobs in one key's queue. */
export interface QueueWork {
  /** waiting (plain and prioritized) */
  waiting: number;
  /** retries waiting for their backoff */
  delayed: number;
  /** taken by a worker and not settled */
  active: number;
}

export const NO_WORK: QueueWork = { waiting: 0, delayed: 0, active: 0 };

export const hasWork = (w: QueueWork): boolean => w.waiting + w.delayed + w.active > 0;

export interface RegistryEntry {
  id: string;
  key: CompileKey;
  /** when a producer last enqueued on it (ms; 0 when unreadable) */
  updatedAt: number;
}

/** Default: an entry with no work and no enqueue for an hour is removed. */
export const DEFAULT_REGISTRY_TTL_MS = 3_600_000;

/** Entries to prune: no work in their queue, not updated for ttlMs. A key with work is never one. */
export function prunableEntries(
  entries: { id: string; updatedAt: number }[],
  work: Map<string, QueueWork>,
  now: number,
  ttlMs: number,
): string[] {
  return entries.filter((e) => e.updatedAt + ttlMs < now && !hasWork(work.get(e.id) ?? NO_WORK)).map((e) => e.id);
}

const entrySchema = z.object({ updated_at: z.number().finite().optional() }).loose();

/** Every entry of the registry whose field is a key id (other fields are left out). */
export async function readRegistry(redis: Redis, keys: Keyspace): Promise<RegistryEntry[]> {
  const raw = await redis.hgetall(keys.registry());
  const out: RegistryEntry[] = [];
  for (const [id, v] of Object.entries(raw)) {
    let key: CompileKey;
    try {
      key = parseKeyId(id);
    } catch {
      continue;
    }
    let updatedAt = 0;
    try {
      updatedAt = entrySchema.parse(JSON.parse(v)).updated_at ?? 0;
    } catch {
      // an unreadable value counts as old
    }
    out.push({ id, key, updatedAt });
  }
  return out;
}

/** The work in the queues of these keys, in one round trip. */
export async function queueWork(redis: Redis, keys: Keyspace, ids: string[]): Promise<Map<string, QueueWork>> {
  const out = new Map<string, QueueWork>();
  if (ids.length === 0) return out;
  const p = redis.pipeline();
  for (const id of ids) {
    const q = keys.queue(id);
    p.llen(q.waitList).zcard(q.prioritizedSet).zcard(q.delayedSet).llen(q.activeList);
  }
  const res = (await p.exec()) ?? [];
  const n = (i: number) => {
    const [err, v] = res[i] ?? [null, 0];
    if (err) throw err;
    return Number(v ?? 0);
  };
  ids.forEach((id, i) => out.set(id, { waiting: n(4 * i) + n(4 * i + 1), delayed: n(4 * i + 2), active: n(4 * i + 3) }));
  return out;
}

/** KEYS: registry, wait, prioritized, delayed, active. ARGV: key id, cutoff (ms). 1 when removed. */
const PRUNE = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local ok, e = pcall(cjson.decode, v)
local at = 0
if ok and type(e) == 'table' then at = tonumber(e.updated_at) or 0 end
if at >= tonumber(ARGV[2]) then return 0 end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 or redis.call('ZCARD', KEYS[4]) > 0 or redis.call('LLEN', KEYS[5]) > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`;

/**
 * Removes a registry entry if, at that moment, its queue holds no job and it was written before
 * `cutoff`. Producers enqueue before they write the entry, so an entry with work is never lost.
 */
export async function pruneRegistryEntry(redis: Redis, keys: Keyspace, id: string, cutoff: number): Promise<boolean> {
  const q = keys.queue(id);
  const r = await redis.eval(PRUNE, 5, keys.registry(), q.waitList, q.prioritizedSet, q.delayedSet, q.activeList, id, String(cutoff));
  return Number(r) === 1;
}
