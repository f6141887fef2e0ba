/**
 * The health of a running batch: its pending requests counted per compile key (items of the batch
 * record that have no result or error yet), diagnosed against the live workers' heartbeats
 * (src/shared/key-health.ts). A finished batch has nothing pending.
 */
import type { Redis } from 'ioredis';
import type { BatchStore } from '../shared/batch-store.js';
import { readHeartbeats } from '../shared/heartbeats.js';
import { diagnoseKeys, type KeyDiagnosis } from '../shared/key-health.js';
import type { Keyspace } from '../shared/keys.js';

/** Pending requests per compile key of a batch (one HSCAN of its items, one check per chunk). */
export async function pendingByKey(store: BatchStore, batchId: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const chunk of store.items(batchId)) {
    const queued = chunk.filter(([, item]) => item.key !== null);
    const settled = await store.settled(
      batchId,
      queued.map(([cid]) => cid),
    );
    queued.forEach(([, item], i) => {
      if (!settled[i]) out.set(item.key!, (out.get(item.key!) ?? 0) + 1);
    });
  }
  return out;
}

/** Per key with pending requests: who holds it, or why no one does. */
export async function batchHealth(redis: Redis, keys: Keyspace, store: BatchStore, batchId: string): Promise<KeyDiagnosis[]> {
  const status = (await store.statuses([batchId]))[0];
  if (status !== 'in_progress' && status !== 'validating') return [];
  const [pending, beats] = await Promise.all([pendingByKey(store, batchId), readHeartbeats(redis, keys)]);
  return diagnoseKeys(pending, beats);
}
