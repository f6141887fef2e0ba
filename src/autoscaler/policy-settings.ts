/** The policy's settings by default, and where each default comes from. */
import type { PolicySettings } from './types.js';

/**
 * The defaults, and where each comes from.
 */
export const DEFAULT_POLICY_SETTINGS: Readonly<Required<PolicySettings>> = Object.freeze({
  /** @defaultValue 0: scale to zero when there is no work (the CLI's `--min-workers 0`) */
  minWorkers: 0,
  /** @defaultValue 8: one wasm worker per core (wasm runs one thread per process) of an 8-core host */
  maxWorkers: 8,
  /**
   * @defaultValue 30 s: two compiles of a GPT-2-small key on wasm (about 15 s each, see
   * `defaultCompileSeconds`): a wait shorter than a compile cannot be met by starting a holder
   */
  targetWaitSeconds: 30,
  /** @defaultValue null: the keep-alive follows the compile cost of the worker's keys */
  idleSeconds: null,
  /**
   * @defaultValue 30 s: six autoscaler intervals of 5 s (`--interval-s`), so a worker is not stopped
   * between two arrivals of a slow trickle; also Knative's scale-to-zero grace period
   */
  minIdleSeconds: 30,
  /** @defaultValue 600 s: twice KEDA's default cooldown (300 s), for keys that take minutes to compile on a GPU */
  maxIdleSeconds: 600,
  /**
   * @defaultValue 4: "clearly more": a move must pay for its compile four times over, since the
   * target serves nothing while it compiles and the load it is weighed against may not last
   */
  moveGainFactor: 4,
  /**
   * @defaultValue 15 s: `npm run bench` measures 3.1 s at B=1 and 4.1 s at B=8 for a GPT-2-small key
   * on wasm; the four sizes 1, 2, 4, 8 add up to about 15 s
   */
  defaultCompileSeconds: 15,
  /**
   * @defaultValue 1 job/s: `npm run bench` measures 40 tokens/s at B=8 for GPT-2 small on wasm, about
   * 1.3 jobs/s of 32 new tokens; rounded down
   */
  defaultServiceRate: 1,
  /** @defaultValue 0.5: give up a holder only when the rest would be at most half busy (HPA-style band) */
  releaseUtilization: 0.5,
  /** @defaultValue 300 s: KEDA's default cooldown, the time a load is assumed to last once seen */
  moveHorizonSeconds: 300,
  /** @defaultValue null: the largest budget among the workers in the state */
  newWorkerBudgetBytes: null,
});
