/**
 * `/scale` for KEDA's `metrics-api` scaler: the autoscaler's last plan as `{"desired_workers": n}`.
 *
 * A ScaledObject with `valueLocation: desired_workers` and `targetValue: "1"` then gives the worker
 * Deployment exactly `n` replicas (deploy/k8s/keda-scaledobject.yaml). It is the alternative to the
 * `kubernetes` driver, which sets the replicas itself and also marks which pods go first: run one or
 * the other on a Deployment, never both.
 *
 * The autoscaler's HTTP server mounts {@link handleScale} at {@link SCALE_PATH}.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Plan } from './types.js';

/** The path KEDA polls. */
export const SCALE_PATH = '/scale';

/** What `/scale` answers: the number of workers the plan wants. */
export interface ScaleResponse {
  desired_workers: number;
}

/** The body of `/scale` for a plan. */
export function scaleResponse(plan: Pick<Plan, 'desired_workers'>): ScaleResponse {
  return { desired_workers: plan.desired_workers };
}

/** The last plan, or null while the autoscaler has not decided one yet. */
export type PlanSource = () => Plan | null | Promise<Plan | null>;

function send(res: ServerResponse, status: number, body: unknown, head: boolean): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(head ? undefined : text);
}

/**
 * Answers one request for `/scale`: 200 with {@link ScaleResponse}; 503 `{"error"}` before the first
 * plan or when reading it fails (KEDA then keeps the replicas it has, or uses its `fallback`); 405
 * for a method other than GET or HEAD. The caller routes by path; this looks only at the method.
 */
export async function handleScale(req: IncomingMessage, res: ServerResponse, getPlan: PlanSource): Promise<void> {
  const head = req.method === 'HEAD';
  if (req.method !== 'GET' && !head) {
    res.setHeader('allow', 'GET, HEAD');
    send(res, 405, { error: `method ${req.method} not allowed on ${SCALE_PATH}` }, false);
    return;
  }
  let plan: Plan | null;
  try {
    plan = await getPlan();
  } catch (e) {
    send(res, 503, { error: `no plan: ${e instanceof Error ? e.message : String(e)}` }, head);
    return;
  }
  if (plan === null) {
    send(res, 503, { error: 'no plan yet: the autoscaler has not completed its first round' }, head);
    return;
  }
  send(res, 200, scaleResponse(plan), head);
}
