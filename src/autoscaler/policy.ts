/**
 * The autoscaling policy: `decide(state, settings) → Plan`, pure and deterministic (the same state
 * gives the same plan, deep equal). It decides how many workers run and which compile keys each
 * holds, counting a compile as a cost:
 *
 * 1. **Stickiness.** A worker keeps the keys assigned to it while it lives. A key with more than one
 *    holder gives one up only when the others would carry its demand at no more than
 *    `releaseUtilization` of their time; only a warm copy is given up, and only to warm holders.
 * 2. **Placement.** A key with work and no holder, or with fewer holders than its demand
 *    (`keyDemand`: arrivals plus the backlog cleared over the target wait and a compile), gets one
 *    where it is ready soonest: a worker that holds it warm, then a worker with room (memory
 *    budget, and load below one worker-unit), then a new worker (scale up at once), and at the
 *    worker limit the least loaded worker that can hold it.
 * 3. **Moves.** A key is spread off a worker whose arrivals alone overload it only when the load
 *    taken off it over `moveHorizonSeconds` is more than `moveGainFactor` times the key's compile
 *    seconds; a lightly loaded worker hands its keys to busier ones when the worker-seconds that
 *    frees are worth `moveGainFactor` times the compiles. Make before break: the old holder keeps
 *    the key until the new one holds it warm, then rule 1 gives it up.
 * 4. **Scale down.** Only an idle worker whose keys have no backlog and no active jobs stops, after a
 *    keep-alive that grows with what compiling its keys again would cost (`keepAliveSeconds`).
 *    Min and max workers are respected; with `minWorkers` 0 an idle system scales to zero.
 *
 * Hysteresis: the band between adding a holder (demand above the holders) and giving one up (demand
 * below `releaseUtilization` of the rest) and the keep-alive mean that the state a plan leads to
 * gives `keep` for every worker under a steady load.
 */
import { PlanBuilder } from './plan-builder.js';
import type { ClusterState, Plan, PolicySettings } from './types.js';

/** Decide how many workers run and which keys each holds. */
export function decide(state: ClusterState, settings: PolicySettings): Plan {
  const plan = new PlanBuilder(state, settings);
  plan.releaseSurplus();
  // A stop can free a place under the worker limit for a key that found none: run again until
  // nothing changes (at most a few passes; each pass only adds holders or stops workers).
  for (let pass = 0; pass < 4; pass++) {
    const before = plan.changes;
    plan.notes.length = 0;
    plan.place();
    plan.relieve();
    plan.consolidate();
    plan.limits();
    plan.scaleDown();
    if (plan.changes === before) break;
  }
  return plan.result();
}
