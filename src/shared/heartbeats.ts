/**
 * Worker heartbeats (`Keyspace.worker(id)`, JSON with a TTL) as others read them: which keys each
 * live worker holds, which it failed to compile, which it refused. Parsed with zod (a record in
 * Redis is untrusted); an unreadable record is left out.
 */
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Keyspace } from './keys.js';

const heartbeatSchema = z
  .object({
    id: z.string(),
    state: z.string(),
    models: z.array(z.string()).default([]),
    keys: z.array(z.string()).default([]),
    compile_failed: z.array(z.object({ key: z.string(), error: z.string() })).default([]),
    refused: z.array(z.object({ key: z.string(), reason: z.string() })).default([]),
    updated_at: z.number().default(0),
  })
  .loose();

export type Heartbeat = z.infer<typeof heartbeatSchema>;

/** A heartbeat of a worker that is still serving (its last record, written when stopping, says `stopped`). */
export const isLive = (h: Heartbeat): boolean => h.state !== 'stopped';

/** Every readable heartbeat under this prefix (SCAN, then one MGET). */
export async function readHeartbeats(redis: Redis, keys: Keyspace): Promise<Heartbeat[]> {
  const names: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', keys.workersPattern(), 'COUNT', 500);
    cursor = next;
    names.push(...batch);
  } while (cursor !== '0');
  if (names.length === 0) return [];
  const vals = await redis.mget(...names);
  const out: Heartbeat[] = [];
  for (const v of vals) {
    if (!v) continue;
    try {
      const r = heartbeatSchema.safeParse(JSON.parse(v));
      if (r.success) out.push(r.data);
    } catch {
      // not JSON: left out
    }
  }
  return out;
}
