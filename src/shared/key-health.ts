/**
 * Why a batch's pending requests are not moving: a pure diagnosis per compile key, from the pending
 * count of each key and the live workers' heartbeats.
 *
 * - `held`: a live worker holds the key (its jobs are being served).
 * - `unservable`: no live worker has the key's model, or every live worker with the model failed
 *   to compile the key: nothing will serve it until a worker with a working compile joins.
 * - `compile_failed`: no one holds it, and some (not all) workers with its model failed to compile it.
 * - `unheld`: no one holds it yet (it is refused at a worker's key limit or cache budget, or it is
 *   about to be compiled).
 */
import { parseKeyId } from './compile-key.js';
import { isLive, type Heartbeat } from './heartbeats.js';

export type KeyState = 'held' | 'unheld' | 'unservable' | 'compile_failed';

export interface KeyDiagnosis {
  key: string;
  /** requests of the batch still pending on this key */
  pending: number;
  state: KeyState;
  /** ids of the live workers holding it */
  holders: string[];
  reason: string;
}

/** A diagnosis per key with pending requests, problem keys first, then by key. */
export function diagnoseKeys(pendingByKey: Map<string, number>, heartbeats: Heartbeat[]): KeyDiagnosis[] {
  const live = heartbeats.filter(isLive);
  const out: KeyDiagnosis[] = [];
  for (const [key, pending] of pendingByKey) {
    if (pending <= 0) continue;
    let model: string;
    try {
      model = parseKeyId(key).model;
    } catch {
      out.push({ key, pending, state: 'unservable', holders: [], reason: 'not a compile key' });
      continue;
    }
    const holders = live.filter((h) => h.keys.includes(key)).map((h) => h.id);
    if (holders.length > 0) {
      out.push({ key, pending, state: 'held', holders, reason: `held by ${holders.join(', ')}` });
      continue;
    }
    const withModel = live.filter((h) => h.models.includes(model));
    if (withModel.length === 0) {
      const why = live.length === 0 ? 'no live worker' : `no live worker serves model ${model} (live: ${live.map((h) => h.id).join(', ')})`;
      out.push({ key, pending, state: 'unservable', holders, reason: why });
      continue;
    }
    const failed = withModel.flatMap((h) => h.compile_failed.filter((f) => f.key === key).map((f) => `${h.id}: ${f.error}`));
    if (failed.length === withModel.length) {
      out.push({
        key,
        pending,
        state: 'unservable',
        holders,
        reason: `compile failed on every worker with model ${model} (${failed.join('; ')})`,
      });
      continue;
    }
    if (failed.length > 0) {
      out.push({
        key,
        pending,
        state: 'compile_failed',
        holders,
        reason: `compile failed (${failed.join('; ')}); not held by any other worker`,
      });
      continue;
    }
    const refused = withModel.flatMap((h) => h.refused.filter((r) => r.key === key).map((r) => `${h.id}: ${r.reason}`));
    const why = refused.length > 0 ? `no worker holds it: refused (${refused.join('; ')})` : 'no worker holds it yet';
    out.push({ key, pending, state: 'unheld', holders, reason: why });
  }
  const rank = (d: KeyDiagnosis) => (d.state === 'held' ? 1 : 0);
  return out.sort((a, b) => rank(a) - rank(b) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
