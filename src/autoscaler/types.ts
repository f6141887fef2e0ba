/**
 * What the autoscaler reads and decides. The policy (policy.ts) is a pure function
 * `decide(state, settings) → Plan`; the loop (autoscaler.ts) builds the state from Redis, applies
 * the plan through a driver, and writes each worker's assigned keys.
 */

/** One compile key as the autoscaler sees it (from the registry, the queues and the heartbeats). */
export interface KeyState {
  /** `model:pP:nN:strategy` */
  key: string;
  model: string;
  /** runnable jobs: waiting + prioritized + delayed that are due */
  backlog: number;
  /** jobs being run now */
  active: number;
  /** jobs enqueued per second, measured by the producer's counter over the last interval(s) */
  arrivalRate: number;
  /**
   * jobs per second one warm worker serves on this key, measured (median over the workers that
   * report it); null when no worker has served it yet
   */
  serviceRate: number | null;
  /** seconds to compile and warm every batch size of this key on one worker, measured; null when never compiled */
  compileSeconds: number | null;
  /** device bytes the key's variants take on a worker (KV caches and workspace); null when unknown */
  bytes: number | null;
  /** age in seconds of the oldest runnable job, 0 when none */
  oldestAgeSeconds: number;
}

export type WorkerRunState = 'starting' | 'warming' | 'idle' | 'busy' | 'draining' | 'stopped';

/** One worker, from its heartbeat and the assignments in Redis. */
export interface WorkerState {
  id: string;
  /** keys assigned to this worker (what the autoscaler wrote last) */
  assigned: string[];
  /** keys it holds warm now (from its heartbeat) */
  held: string[];
  state: WorkerRunState;
  /** models the worker has loaded: it can only hold keys of these */
  models: string[];
  /** device bytes the worker may give to variants, and the bytes its held variants take */
  budgetBytes: number;
  usedBytes: number;
  /** seconds since it last ran a batch (0 while busy) */
  idleSeconds: number;
  /** seconds since it started */
  ageSeconds: number;
  /** true when the driver started it and it has not yet written a heartbeat */
  pending?: boolean;
}

/** Everything the policy looks at, at one instant. */
export interface ClusterState {
  /** seconds since the epoch, for the record; the policy uses durations only */
  now: number;
  keys: KeyState[];
  workers: WorkerState[];
  /** models any new worker would load (the autoscaler's --model list) */
  models: string[];
}

export interface PolicySettings {
  /** never fewer workers (default 0: scale to zero) */
  minWorkers: number;
  /** never more workers */
  maxWorkers: number;
  /** the queue wait to aim for, in seconds: demand = what clears backlog plus arrivals within it */
  targetWaitSeconds: number;
  /**
   * fixed idle time before an idle, drained worker stops; null: a keep-alive as long as rebuilding
   * its keys would cost (sum of their compile seconds), clamped to [minIdleSeconds, maxIdleSeconds]
   */
  idleSeconds: number | null;
  minIdleSeconds: number;
  maxIdleSeconds: number;
  /** a key moves to another worker only when that saves more than this times its compile seconds */
  moveGainFactor: number;
  /** compile seconds assumed for a key never compiled */
  defaultCompileSeconds: number;
  /** jobs per second assumed for a key never served */
  defaultServiceRate: number;
  /**
   * a key with more than one holder gives one up when the others would carry its demand at no more
   * than this share of their time (below 1: the band between adding and giving up a holder is what
   * keeps a steady load from flapping)
   */
  releaseUtilization?: number;
  /**
   * how long, in seconds, a relief is assumed to pay off when a key is spread off an overloaded
   * worker: the gain of a move is the load taken off that worker times this horizon
   */
  moveHorizonSeconds?: number;
  /** device bytes a worker not yet started may give to variants; null: the largest budget of the workers seen */
  newWorkerBudgetBytes?: number | null;
}

export type WorkerAction = 'keep' | 'start' | 'stop';

export interface PlannedWorker {
  id: string;
  /** the keys this worker is to hold */
  keys: string[];
  action: WorkerAction;
}

/** What the policy decides; `--dry-run --once --json` prints exactly this. */
export interface Plan {
  desired_workers: number;
  workers: PlannedWorker[];
  /** one line per decision, for logs and for operators */
  reasons: string[];
}
