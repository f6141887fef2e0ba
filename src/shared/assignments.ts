/**
 * Assignment sets (`Keyspace.assignment(workerId)`): the compile keys the autoscaler gives each
 * worker. Written by the autoscaler (all of one pass in one MULTI), read by `worker --assigned` at
 * every refresh and by the autoscaler itself. A set in Redis is untrusted: members that are not
 * compile key ids are left out.
 */
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { parseKeyId } from './compile-key.js';
import type { Keyspace } from './keys.js';

const membersSchema = z.array(z.string());

/** The members of a set that are compile key ids, sorted. */
export function assignedKeys(raw: unknown): string[] {
  const r = membersSchema.safeParse(raw);
  if (!r.success) return [];
  return r.data
    .filter((id) => {
      try {
        parseKeyId(id);
        return true;
      } catch {
        return false;
      }
    })
    .sort();
}

/** The keys assigned to one worker (none when it has no set). */
export async function readAssignment(redis: Redis, keys: Keyspace, workerId: string): Promise<string[]> {
  return assignedKeys(await redis.smembers(keys.assignment(workerId)));
}

/** Every assignment set under this prefix: worker id → keys (SCAN, then one pipeline). */
export async function readAssignments(redis: Redis, keys: Keyspace): Promise<Map<string, string[]>> {
  const names: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', keys.assignmentsPattern(), 'COUNT', 500);
    cursor = next;
    names.push(...batch);
  } while (cursor !== '0');
  const out = new Map<string, string[]>();
  const ids = names.map((n) => keys.workerOfAssignment(n));
  const listed = names.filter((_, i) => ids[i] !== null);
  if (listed.length === 0) return out;
  const p = redis.pipeline();
  for (const n of listed) p.smembers(n);
  const res = (await p.exec()) ?? [];
  listed.forEach((n, i) => {
    const [err, v] = res[i] ?? [null, []];
    if (err) throw err;
    out.set(keys.workerOfAssignment(n)!, assignedKeys(v));
  });
  return out;
}

/**
 * Replaces the assignment sets of these workers, all at once (MULTI): each set becomes exactly its
 * keys; a worker given no key has no set. `remove`: sets to delete (workers gone).
 */
export async function writeAssignments(
  redis: Redis,
  keys: Keyspace,
  assign: ReadonlyMap<string, readonly string[]>,
  remove: readonly string[] = [],
): Promise<void> {
  if (assign.size === 0 && remove.length === 0) return;
  const m = redis.multi();
  for (const id of remove) m.del(keys.assignment(id));
  for (const [id, list] of assign) {
    for (const k of list) parseKeyId(k);
    const name = keys.assignment(id);
    m.del(name);
    if (list.length > 0) m.sadd(name, ...list);
  }
  const res = await m.exec();
  for (const [err] of res ?? []) if (err) throw err;
}
