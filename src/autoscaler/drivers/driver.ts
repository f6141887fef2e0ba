/**
 * A driver turns a plan into running workers: local processes (local.ts) or a Kubernetes
 * Deployment (kubernetes.ts). The autoscaler writes each worker's assignment set before it calls
 * `apply`, so a driver only starts and stops workers; it never decides.
 */
import type { ClusterState, Plan } from '../types.js';

/** What every driver is given when the autoscaler builds it. */
export interface DriverContext {
  /** the models a new worker loads, as `name=dir` (the autoscaler's --model list) */
  models: string[];
  /** the Redis URL workers connect to */
  redisUrl: string;
  /** the key prefix as written in keys (with its braces when hash-tagged) */
  prefix: string;
  /** extra flags passed to every worker it starts (for example `--lock-ms 2000`) */
  workerArgs: string[];
}

export interface Driver {
  /** `local`, `kubernetes`, ... (for logs and metrics) */
  readonly name: string;
  /**
   * Make the running workers match the plan: start each worker whose action is `start` (with its
   * planned id: the worker is started as `batchgen worker --assigned --id <id>`), stop each whose
   * action is `stop` (gracefully: the worker drains the batch in hand), leave `keep` alone.
   * Resolves once the starts and stops have been issued; it need not wait for a stop to finish.
   */
  apply(plan: Plan, state: ClusterState): Promise<void>;
  /** The ids of the workers this driver runs now (started and not yet exited). */
  running(): Promise<string[]>;
  /** Stop every worker this driver started, wait for them to drain, release its resources. Safe twice. */
  close(): Promise<void>;
}

/** How the CLI builds a driver by name: each driver module exports `createDriver`. */
export type DriverFactory = (ctx: DriverContext) => Driver | Promise<Driver>;
