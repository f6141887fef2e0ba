/**
 * The `kubernetes` driver: the autoscaler's plan applied to one worker Deployment (the pool of
 * `batchgen worker --assigned --id $(POD_NAME)` pods) through the Kubernetes API.
 *
 * A worker's id is its pod's name: the pool Deployment passes `metadata.name` to `--id` through the
 * downward API (env `POD_NAME`). So the plan's `stop` entries name pods, and the driver can say which
 * pods Kubernetes should remove when it lowers the replica count: before lowering it, it annotates
 * each pod to stop with `controller.kubernetes.io/pod-deletion-cost` set low (`-1000`) and puts the
 * others back to the keep cost (`0`, the value a pod without the annotation has). The ReplicaSet
 * controller removes the pods of lowest cost first; the annotation is a preference it honours on a
 * scale-down, not a guarantee (a pod not yet ready, say, goes before a ready one whatever its cost).
 *
 * `start` entries cannot choose pod names: scaling up only raises the replica count, and the new
 * pods, whose names Kubernetes picks, get their keys from the autoscaler once they heartbeat.
 *
 * `@kubernetes/client-node` is loaded when a driver is made ({@link createKubernetesDriver}), never
 * when this module is imported: the other drivers and commands do not depend on it loading.
 *
 * The driver needs, in its namespace: `get` on the Deployment, `get` and `patch` on its
 * `deployments/scale`, and `list`, `get` and `patch` on `pods` (deploy/k8s/autoscaler.yaml's Role).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { AppsV1Api, CoreV1Api, KubeConfig, V1LabelSelector, V1Pod } from '@kubernetes/client-node';
import { BatchgenError, type ErrorCode } from '../../shared/errors.js';
import type { ClusterState, Plan } from '../types.js';
import type { Driver, DriverContext } from './driver.js';

/** The annotation the ReplicaSet controller reads to choose which pods go first on a scale-down. */
export const POD_DELETION_COST = 'controller.kubernetes.io/pod-deletion-cost';

export interface KubernetesDriverOptions {
  /**
   * Where the API server is and how to authenticate.
   * @defaultValue the pod's service account: `KubeConfig.loadFromCluster()`
   */
  kubeConfig?: KubeConfig;
  /**
   * The namespace of the worker Deployment.
   * @defaultValue the current context's namespace (in a pod: its own, from the service account), else `default`
   */
  namespace?: string;
  /**
   * The worker Deployment's name.
   * @defaultValue `batchgen-worker` (deploy/k8s/worker-pool.yaml)
   */
  deployment?: string;
  /**
   * Who sets the replica count: `driver` (this driver, through `deployments/scale`) or `keda` (a KEDA
   * ScaledObject reading the autoscaler's `/scale`; the driver then only marks the pods to stop, at
   * every round, so the marks are there when KEDA lowers the count).
   * @defaultValue `driver`
   */
  replicas?: 'driver' | 'keda';
  /**
   * Deletion cost put on the pods of workers the plan stops.
   * @defaultValue -1000
   */
  stopCost?: number;
  /**
   * Deletion cost put on every other pod.
   * @defaultValue 0
   */
  keepCost?: number;
}

/** An error the Kubernetes API answered: its HTTP status and its message, and what was asked. */
export class KubernetesApiError extends BatchgenError {
  readonly status: number;
  constructor(status: number, operation: string, apiMessage: string) {
    super(codeForStatus(status), `Kubernetes API: ${operation}: ${status} ${statusText(status)}${apiMessage ? `: ${apiMessage}` : ''}`);
    this.name = 'KubernetesApiError';
    this.status = status;
  }
}

function codeForStatus(status: number): ErrorCode {
  if (status === 401 || status === 403) return 'permission_denied';
  if (status === 404) return 'not_found';
  if (status === 400 || status === 422) return 'invalid_config';
  return 'internal_error';
}

function statusText(status: number): string {
  const texts: Record<number, string> = {
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    409: 'Conflict',
    422: 'Unprocessable Entity',
    429: 'Too Many Requests',
    500: 'Internal Server Error',
    503: 'Service Unavailable',
  };
  return texts[status] ?? 'error';
}

/** The message of a Kubernetes `Status` body (JSON text or an object), else the text itself, shortened. */
export function apiMessage(body: unknown): string {
  let value = body;
  if (typeof body === 'string') {
    try {
      value = JSON.parse(body);
    } catch {
      return body.trim().slice(0, 300);
    }
  }
  if (value !== null && typeof value === 'object' && typeof (value as { message?: unknown }).message === 'string') {
    return (value as { message: string }).message;
  }
  return '';
}

/** Runs one API call; an answer outside 2xx becomes a KubernetesApiError naming `operation`. */
async function call<T>(operation: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const status = (e as { code?: unknown }).code;
    if (typeof status === 'number' && status >= 300)
      throw new KubernetesApiError(status, operation, apiMessage((e as { body?: unknown }).body));
    throw e;
  }
}

type KubernetesClient = typeof import('@kubernetes/client-node');

/** `>=a.b.c` against a version; true when the range is of another form (not checked here). */
export function satisfiesAtLeast(range: string, version: string): boolean {
  const m = /^\s*>=\s*(\d+)\.(\d+)\.(\d+)\s*$/.exec(range);
  if (!m) return true;
  const have = version.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const want = Number(m[i + 1]);
    if ((have[i] ?? 0) !== want) return (have[i] ?? 0) > want;
  }
  return true;
}

/**
 * Why the client would not load on this Node, read from package.json files before importing it: the
 * client's 2.x line loads undici 8, which needs Node 22.19, and a module graph that fails to
 * evaluate on Node 20 also leaves an unhandled rejection behind, so it is not imported to find out.
 */
function engineProblem(): string | null {
  try {
    const entry = fileURLToPath(import.meta.resolve('@kubernetes/client-node'));
    const req = createRequire(entry);
    for (const name of ['@kubernetes/client-node', 'undici']) {
      let file: string;
      try {
        file = req.resolve(`${name}/package.json`);
      } catch {
        continue; // not a dependency of this version
      }
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { version?: string; engines?: { node?: string } };
      const range = pkg.engines?.node;
      if (range && !satisfiesAtLeast(range, process.versions.node)) return `${name} ${pkg.version} needs Node ${range.trim()}`;
    }
    return null;
  } catch {
    return null; // not resolvable: the import below says why
  }
}

/**
 * `@kubernetes/client-node`, loaded on first use; a failure to load is a BatchgenError naming the
 * reason and the Node version (its 2.x line needs Node 22.19 or later; 1.x runs on Node 20).
 */
export async function loadKubernetesClient(): Promise<KubernetesClient> {
  const fail = (reason: string) =>
    new BatchgenError(
      'invalid_config',
      `the kubernetes driver cannot load @kubernetes/client-node on Node ${process.versions.node}: ${reason}`,
    );
  const problem = engineProblem();
  if (problem) throw fail(problem);
  try {
    return await import('@kubernetes/client-node');
  } catch (e) {
    throw fail(e instanceof Error ? e.message : String(e));
  }
}

/** A label selector as the API's `labelSelector` query parameter (`a=b,c in (d,e),!f`). */
export function selectorString(selector: V1LabelSelector | undefined): string {
  const parts = Object.entries(selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of selector?.matchExpressions ?? []) {
    const values = (e.values ?? []).join(',');
    if (e.operator === 'In') parts.push(`${e.key} in (${values})`);
    else if (e.operator === 'NotIn') parts.push(`${e.key} notin (${values})`);
    else if (e.operator === 'Exists') parts.push(e.key);
    else if (e.operator === 'DoesNotExist') parts.push(`!${e.key}`);
    else throw new BatchgenError('invalid_config', `label selector: unknown operator ${e.operator} on ${e.key}`);
  }
  if (parts.length === 0)
    throw new BatchgenError('invalid_config', 'the worker Deployment has an empty selector: it would match every pod');
  return parts.join(',');
}

/** A pod that is there and not on its way out (not terminating, not finished). */
function live(pod: V1Pod): boolean {
  return !pod.metadata?.deletionTimestamp && pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed';
}

/**
 * The annotation changes that make the pods of `stop` go first: the stop cost on those, the keep cost
 * on the rest, only where a pod's annotation differs (a pod without it counts as cost 0).
 */
export function deletionCostChanges(
  pods: V1Pod[],
  stop: ReadonlySet<string>,
  stopCost: number,
  keepCost: number,
): { pod: string; cost: string }[] {
  const changes: { pod: string; cost: string }[] = [];
  for (const pod of pods) {
    const name = pod.metadata?.name;
    if (!name) continue;
    const want = stop.has(name) ? stopCost : keepCost;
    const raw = pod.metadata?.annotations?.[POD_DELETION_COST];
    if (raw === undefined ? want !== 0 : raw !== String(want)) changes.push({ pod: name, cost: String(want) });
  }
  return changes;
}

export class KubernetesDriver implements Driver {
  readonly name = 'kubernetes';
  readonly namespace: string;
  readonly deployment: string;
  readonly replicas: 'driver' | 'keda';
  private readonly apps: AppsV1Api;
  private readonly core: CoreV1Api;
  private readonly stopCost: number;
  private readonly keepCost: number;
  private readonly mergePatch: ReturnType<KubernetesClient['setHeaderOptions']>;

  /** Use {@link createKubernetesDriver}, which loads the client first. */
  constructor(client: KubernetesClient, opts: KubernetesDriverOptions = {}) {
    const kc = opts.kubeConfig ?? inCluster(client);
    this.namespace = opts.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
    this.deployment = opts.deployment ?? 'batchgen-worker';
    this.replicas = opts.replicas ?? 'driver';
    if (this.replicas !== 'driver' && this.replicas !== 'keda') {
      throw new BatchgenError('invalid_config', `replicas are set by driver or keda, not ${String(this.replicas)}`);
    }
    this.stopCost = opts.stopCost ?? -1000;
    this.keepCost = opts.keepCost ?? 0;
    if (!Number.isInteger(this.stopCost) || !Number.isInteger(this.keepCost) || this.stopCost >= this.keepCost) {
      throw new BatchgenError(
        'invalid_config',
        `pod deletion costs: stop (${this.stopCost}) must be an integer below keep (${this.keepCost})`,
      );
    }
    this.apps = kc.makeApiClient(client.AppsV1Api);
    this.core = kc.makeApiClient(client.CoreV1Api);
    this.mergePatch = client.setHeaderOptions('Content-Type', client.PatchStrategy.MergePatch);
  }

  /**
   * On a scale-down, marks the pods of the plan's `stop` workers (by pod name), then sets the
   * Deployment's replicas to `plan.desired_workers`; on a scale-up only raises them. A `stop` id that
   * names no pod of the Deployment is left alone. With `replicas: 'keda'` it marks the pods at every
   * round and leaves the count to KEDA.
   */
  async apply(plan: Plan, _state: ClusterState): Promise<void> {
    const desired = plan.desired_workers;
    if (!Number.isInteger(desired) || desired < 0)
      throw new BatchgenError('invalid_config', `desired_workers must be a whole number ≥ 0, got ${desired}`);
    const { replicas, selector } = await this.readDeployment();
    if (desired < replicas || this.replicas === 'keda') {
      const stop = new Set(plan.workers.filter((w) => w.action === 'stop').map((w) => w.id));
      const pods = await this.listPods(selector);
      const changes = deletionCostChanges(pods, stop, this.stopCost, this.keepCost);
      await Promise.all(changes.map((c) => this.annotate(c.pod, c.cost)));
    }
    if (this.replicas === 'driver' && desired !== replicas) await this.scale(desired);
  }

  /** The names (worker ids) of the Deployment's pods that are there and not terminating. */
  async running(): Promise<string[]> {
    const { selector } = await this.readDeployment();
    return (await this.listPods(selector))
      .map((p) => p.metadata?.name)
      .filter((n): n is string => typeof n === 'string')
      .sort();
  }

  /**
   * Releases nothing and stops no pod: the workers belong to the Deployment, not to this process, so
   * an autoscaler that restarts leaves them running (the replica count stays where it was).
   */
  async close(): Promise<void> {}

  private where(): string {
    return `deployment ${this.deployment} in namespace ${this.namespace}`;
  }

  private async readDeployment(): Promise<{ replicas: number; selector: string }> {
    const d = await call(`get ${this.where()}`, () =>
      this.apps.readNamespacedDeployment({ name: this.deployment, namespace: this.namespace }),
    );
    return { replicas: d.spec?.replicas ?? 1, selector: selectorString(d.spec?.selector) };
  }

  private async listPods(labelSelector: string): Promise<V1Pod[]> {
    const list = await call(`list pods of ${this.where()}`, () =>
      this.core.listNamespacedPod({ namespace: this.namespace, labelSelector }),
    );
    return list.items.filter(live);
  }

  private async annotate(pod: string, cost: string): Promise<void> {
    const body = { metadata: { annotations: { [POD_DELETION_COST]: cost } } };
    try {
      await call(`patch pod ${pod} in namespace ${this.namespace}`, () =>
        this.core.patchNamespacedPod({ name: pod, namespace: this.namespace, body }, this.mergePatch),
      );
    } catch (e) {
      // gone since it was listed: nothing left to mark
      if (!(e instanceof KubernetesApiError && e.status === 404)) throw e;
    }
  }

  private async scale(replicas: number): Promise<void> {
    await call(`scale ${this.where()} to ${replicas}`, () =>
      this.apps.patchNamespacedDeploymentScale(
        { name: this.deployment, namespace: this.namespace, body: { spec: { replicas } } },
        this.mergePatch,
      ),
    );
  }
}

/**
 * The driver as the autoscaler's CLI builds it (`--driver kubernetes`): in-cluster credentials;
 * `BATCHGEN_KUBE_NAMESPACE` and `BATCHGEN_KUBE_DEPLOYMENT` override the namespace and the Deployment;
 * `BATCHGEN_KUBE_REPLICAS=keda` leaves the replica count to a KEDA ScaledObject.
 * The context's models and Redis URL are not used: the pool Deployment's pods carry their own.
 */
export function createDriver(_ctx: DriverContext, env: NodeJS.ProcessEnv = process.env): Promise<KubernetesDriver> {
  return createKubernetesDriver({
    namespace: env.BATCHGEN_KUBE_NAMESPACE || undefined,
    deployment: env.BATCHGEN_KUBE_DEPLOYMENT || undefined,
    replicas: (env.BATCHGEN_KUBE_REPLICAS || undefined) as KubernetesDriverOptions['replicas'],
  });
}

/** Loads `@kubernetes/client-node`, then makes the driver. */
export async function createKubernetesDriver(opts: KubernetesDriverOptions = {}): Promise<KubernetesDriver> {
  return new KubernetesDriver(await loadKubernetesClient(), opts);
}

function inCluster(client: KubernetesClient): KubeConfig {
  if (!process.env.KUBERNETES_SERVICE_HOST) {
    throw new BatchgenError(
      'invalid_config',
      'the kubernetes driver runs in a pod (KUBERNETES_SERVICE_HOST is not set), or is given a kubeconfig',
    );
  }
  const kc = new client.KubeConfig();
  kc.loadFromCluster();
  return kc;
}
