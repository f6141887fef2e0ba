/**
 * The kubernetes driver against a fake Kubernetes API server (node:http on 127.0.0.1, a kubeconfig
 * with its URL and a token): the requests it receives, in order. On a scale-down the pods to stop
 * are annotated with a low pod-deletion-cost before the replica count changes, and the count is the
 * plan's desired_workers; on a scale-up only the replica count changes; an API error is a
 * BatchgenError naming its status and the API's message.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { KubeConfig } from '@kubernetes/client-node';
import {
  createDriver,
  createKubernetesDriver,
  deletionCostChanges,
  KubernetesApiError,
  type KubernetesDriver,
  type KubernetesDriverOptions,
  loadKubernetesClient,
  POD_DELETION_COST,
  satisfiesAtLeast,
  selectorString,
} from '../../src/autoscaler/drivers/kubernetes.js';
import type { ClusterState, Plan, PlannedWorker } from '../../src/autoscaler/types.js';
import { BatchgenError } from '../../src/shared/errors.js';

const NS = 'batch';
const TOKEN = 'fake-token-123';
const STATE: ClusterState = { now: 0, keys: [], workers: [], models: ['tiny'] };

interface FakePod {
  name: string;
  labels: Record<string, string>;
  annotations?: Record<string, string>;
  deleting?: boolean;
  phase?: string;
}

interface Received {
  method: string;
  path: string;
  query: URLSearchParams;
  contentType: string | undefined;
  authorization: string | undefined;
  body: unknown;
}

/** The few endpoints the driver uses, over an in-memory Deployment and its pods. */
class FakeApiServer {
  readonly received: Received[] = [];
  replicas = 0;
  pods: FakePod[] = [];
  /** answer this status (with a Status body) to requests whose `METHOD path` matches */
  failWith: { match: RegExp; status: number; message?: string } | null = null;
  private server: Server | null = null;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      void this.body(req).then((body) => {
        const u = new URL(req.url ?? '/', 'http://fake');
        this.received.push({
          method: req.method ?? '',
          path: u.pathname,
          query: u.searchParams,
          contentType: req.headers['content-type'],
          authorization: req.headers.authorization,
          body,
        });
        const [status, answer] = this.answer(req.method ?? '', u, body);
        const text = answer === undefined ? '' : JSON.stringify(answer);
        res.writeHead(status, { 'content-type': 'application/json' }).end(text);
      });
    });
    await new Promise<void>((res) => this.server!.listen(0, '127.0.0.1', () => res()));
    const a = this.server.address();
    this.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
    return this;
  }

  async stop(): Promise<void> {
    await new Promise<void>((res) => this.server?.close(() => res()));
  }

  private async body(req: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    return text === '' ? undefined : JSON.parse(text);
  }

  private pod(p: FakePod): object {
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: p.name,
        namespace: NS,
        labels: p.labels,
        annotations: p.annotations,
        ...(p.deleting ? { deletionTimestamp: '2024-01-01T00:00:00Z' } : {}),
      },
      status: { phase: p.phase ?? 'Running' },
    };
  }

  private answer(method: string, u: URL, body: unknown): [number, unknown] {
    const route = `${method} ${u.pathname}`;
    if (this.failWith?.match.test(route)) {
      const { status, message } = this.failWith;
      return [status, message === undefined ? undefined : { kind: 'Status', apiVersion: 'v1', status: 'Failure', message, code: status }];
    }
    const dep = `/apis/apps/v1/namespaces/${NS}/deployments/batchgen-worker`;
    if (route === `GET ${dep}`) {
      return [
        200,
        {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name: 'batchgen-worker', namespace: NS },
          spec: {
            replicas: this.replicas,
            selector: { matchLabels: { app: 'batchgen-worker' } },
            template: {
              metadata: { labels: { app: 'batchgen-worker' } },
              spec: { containers: [{ name: 'worker', image: 'batchgen:latest' }] },
            },
          },
        },
      ];
    }
    if (route === `PATCH ${dep}/scale`) {
      this.replicas = (body as { spec: { replicas: number } }).spec.replicas;
      return [
        200,
        {
          apiVersion: 'autoscaling/v1',
          kind: 'Scale',
          metadata: { name: 'batchgen-worker', namespace: NS },
          spec: { replicas: this.replicas },
        },
      ];
    }
    if (route === `GET /api/v1/namespaces/${NS}/pods`) {
      const want = (u.searchParams.get('labelSelector') ?? '').split(',').map((kv) => kv.split('='));
      const items = this.pods.filter((p) => want.every(([k, v]) => p.labels[k] === v)).map((p) => this.pod(p));
      return [200, { apiVersion: 'v1', kind: 'PodList', metadata: {}, items }];
    }
    const podPatch = new RegExp(`^PATCH /api/v1/namespaces/${NS}/pods/([^/]+)$`).exec(route);
    if (podPatch) {
      const p = this.pods.find((x) => x.name === podPatch[1]);
      if (!p) return [404, { kind: 'Status', message: `pods "${podPatch[1]}" not found`, code: 404 }];
      const annotations = (body as { metadata?: { annotations?: Record<string, string> } }).metadata?.annotations ?? {};
      p.annotations = { ...p.annotations, ...annotations };
      return [200, this.pod(p)];
    }
    return [404, { kind: 'Status', message: `the fake has no ${route}`, code: 404 }];
  }
}

// The client is loaded as the driver loads it; where it cannot load on this Node, the tests that
// need it say why they skip (the pure ones below still run).
const client = await loadKubernetesClient().catch((e: unknown) => (e as Error).message);
const skip = typeof client === 'string' && client;

function kubeConfig(server: string): KubeConfig {
  if (typeof client === 'string') throw new Error(client);
  const kc = new client.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server, skipTLSVerify: true }],
    users: [{ name: 'autoscaler', token: TOKEN }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'autoscaler', namespace: NS }],
    currentContext: 'fake',
  });
  return kc;
}

const worker = (id: string, action: PlannedWorker['action']): PlannedWorker => ({ id, keys: ['tiny:p16:n16:greedy'], action });
const WORKER = { app: 'batchgen-worker' };

const servers: FakeApiServer[] = [];
async function fake(): Promise<{ api: FakeApiServer; driver: KubernetesDriver }> {
  const api = await new FakeApiServer().start();
  servers.push(api);
  return { api, driver: await createKubernetesDriver({ kubeConfig: kubeConfig(api.url) }) };
}
after(async () => {
  for (const s of servers) await s.stop();
});

test('scale-down: the pods to stop get a low deletion cost before the replicas go down to desired_workers', { skip }, async () => {
  const { api, driver } = await fake();
  api.replicas = 4;
  api.pods = [
    { name: 'batchgen-worker-7d9-a', labels: WORKER },
    { name: 'batchgen-worker-7d9-b', labels: WORKER },
    { name: 'batchgen-worker-7d9-c', labels: WORKER },
    // marked to go in an earlier round, kept now: back to the keep cost
    { name: 'batchgen-worker-7d9-d', labels: WORKER, annotations: { [POD_DELETION_COST]: '-1000' } },
    // not the pool's: never touched, even with a name in the plan
    { name: 'redis-0', labels: { app: 'batchgen-redis' } },
  ];
  const plan: Plan = {
    desired_workers: 2,
    workers: [
      worker('batchgen-worker-7d9-a', 'keep'),
      worker('batchgen-worker-7d9-b', 'stop'),
      worker('batchgen-worker-7d9-c', 'stop'),
      worker('batchgen-worker-7d9-d', 'keep'),
      worker('redis-0', 'stop'),
    ],
    reasons: [],
  };
  await driver.apply(plan, STATE);

  const writes = api.received.filter((r) => r.method === 'PATCH');
  const scaleAt = writes.findIndex((r) => r.path.endsWith('/deployments/batchgen-worker/scale'));
  assert.ok(scaleAt >= 0, 'the replicas were set');
  assert.equal(scaleAt, writes.length - 1, 'every pod annotation is patched before the replicas change');
  assert.deepEqual(writes[scaleAt].body, { spec: { replicas: 2 } });
  assert.equal(api.replicas, plan.desired_workers);

  const costs = Object.fromEntries(
    writes
      .slice(0, scaleAt)
      .map((r) => [
        r.path.split('/').pop(),
        (r.body as { metadata: { annotations: Record<string, string> } }).metadata.annotations[POD_DELETION_COST],
      ]),
  );
  assert.deepEqual(costs, { 'batchgen-worker-7d9-b': '-1000', 'batchgen-worker-7d9-c': '-1000', 'batchgen-worker-7d9-d': '0' });
  assert.equal(api.pods.find((p) => p.name === 'redis-0')!.annotations, undefined);

  for (const r of writes) assert.equal(r.contentType, 'application/merge-patch+json', `${r.path}: a merge patch`);
  for (const r of api.received) assert.equal(r.authorization, `Bearer ${TOKEN}`, `${r.method} ${r.path}: the kubeconfig's token`);
  const list = api.received.find((r) => r.path === `/api/v1/namespaces/${NS}/pods`);
  assert.equal(list?.query.get('labelSelector'), 'app=batchgen-worker', "pods listed by the Deployment's selector");
});

test('scale-up: only the replica count changes (new pods get their keys once they heartbeat)', { skip }, async () => {
  const { api, driver } = await fake();
  api.replicas = 1;
  api.pods = [{ name: 'batchgen-worker-7d9-a', labels: WORKER, annotations: { [POD_DELETION_COST]: '-1000' } }];
  const plan: Plan = {
    desired_workers: 3,
    workers: [worker('batchgen-worker-7d9-a', 'keep'), worker('new-1', 'start'), worker('new-2', 'start')],
    reasons: [],
  };
  await driver.apply(plan, STATE);
  const writes = api.received.filter((r) => r.method !== 'GET');
  assert.deepEqual(
    writes.map((r) => [r.method, r.path, r.body]),
    [['PATCH', `/apis/apps/v1/namespaces/${NS}/deployments/batchgen-worker/scale`, { spec: { replicas: 3 } }]],
  );
  assert.equal(api.replicas, 3);
});

test('replicas: keda: the pods to stop are marked, the replica count is left to KEDA', { skip }, async () => {
  const api = await new FakeApiServer().start();
  servers.push(api);
  const driver = await createKubernetesDriver({ kubeConfig: kubeConfig(api.url), replicas: 'keda' });
  api.replicas = 2; // KEDA has not lowered it yet
  api.pods = [
    { name: 'batchgen-worker-7d9-a', labels: WORKER },
    { name: 'batchgen-worker-7d9-b', labels: WORKER },
  ];
  await driver.apply(
    { desired_workers: 1, workers: [worker('batchgen-worker-7d9-a', 'keep'), worker('batchgen-worker-7d9-b', 'stop')], reasons: [] },
    STATE,
  );
  assert.deepEqual(
    api.received.filter((r) => r.method === 'PATCH').map((r) => r.path),
    [`/api/v1/namespaces/${NS}/pods/batchgen-worker-7d9-b`],
  );
  assert.equal(api.pods[1].annotations?.[POD_DELETION_COST], '-1000');
  assert.equal(api.replicas, 2);
  await assert.rejects(createKubernetesDriver({ kubeConfig: kubeConfig(api.url), replicas: 'hpa' as 'keda' }), /driver or keda, not hpa/);
});

test('a plan with the replicas as they are writes nothing', { skip }, async () => {
  const { api, driver } = await fake();
  api.replicas = 2;
  api.pods = [
    { name: 'batchgen-worker-7d9-a', labels: WORKER },
    { name: 'batchgen-worker-7d9-b', labels: WORKER },
  ];
  await driver.apply(
    { desired_workers: 2, workers: [worker('batchgen-worker-7d9-a', 'keep'), worker('batchgen-worker-7d9-b', 'keep')], reasons: [] },
    STATE,
  );
  assert.deepEqual(
    api.received.filter((r) => r.method !== 'GET'),
    [],
  );
});

test('running: the pool pods that are there, without terminating or finished ones', { skip }, async () => {
  const { api, driver } = await fake();
  api.pods = [
    { name: 'batchgen-worker-7d9-b', labels: WORKER },
    { name: 'batchgen-worker-7d9-a', labels: WORKER, phase: 'Pending' },
    { name: 'batchgen-worker-7d9-c', labels: WORKER, deleting: true },
    { name: 'batchgen-worker-7d9-e', labels: WORKER, phase: 'Failed' },
    { name: 'redis-0', labels: { app: 'batchgen-redis' } },
  ];
  assert.deepEqual(await driver.running(), ['batchgen-worker-7d9-a', 'batchgen-worker-7d9-b']);
});

test('an API error is a BatchgenError naming the status, the API message and what was asked', { skip }, async () => {
  const { api, driver } = await fake();
  api.replicas = 2;
  api.pods = [{ name: 'batchgen-worker-7d9-a', labels: WORKER }];
  const forbidden =
    'deployments.apps "batchgen-worker" is forbidden: User "system:serviceaccount:batch:batchgen-autoscaler" cannot patch resource "deployments/scale"';
  api.failWith = { match: /^PATCH .*\/scale$/, status: 403, message: forbidden };
  const scaleUp: Plan = { desired_workers: 3, workers: [worker('batchgen-worker-7d9-a', 'keep'), worker('n', 'start')], reasons: [] };
  await assert.rejects(driver.apply(scaleUp, STATE), (e: unknown) => {
    assert.ok(e instanceof KubernetesApiError && e instanceof BatchgenError);
    assert.equal(e.status, 403);
    assert.equal(e.code, 'permission_denied');
    assert.match(e.message, /403 Forbidden/);
    assert.ok(e.message.includes(forbidden), e.message);
    assert.match(e.message, /scale deployment batchgen-worker in namespace batch to 3/);
    return true;
  });
  assert.equal(api.replicas, 2, 'nothing changed');

  api.failWith = { match: /^GET .*\/deployments\//, status: 404, message: 'deployments.apps "batchgen-worker" not found' };
  await assert.rejects(driver.running(), (e: unknown) => {
    assert.ok(e instanceof KubernetesApiError);
    assert.equal(e.code, 'not_found');
    assert.match(e.message, /404 Not Found: deployments\.apps "batchgen-worker" not found/);
    return true;
  });

  // 401 comes with no Status body
  api.failWith = { match: /^GET /, status: 401 };
  await assert.rejects(driver.running(), /Kubernetes API: get deployment batchgen-worker in namespace batch: 401 Unauthorized$/);

  // a pod patch that fails stops the round before the replicas change
  api.failWith = { match: /^PATCH \/api\/v1\/.*\/pods\//, status: 403, message: 'pods is forbidden' };
  const scaleDown: Plan = { desired_workers: 1, workers: [worker('batchgen-worker-7d9-a', 'stop')], reasons: [] };
  await assert.rejects(
    driver.apply(scaleDown, STATE),
    /patch pod batchgen-worker-7d9-a in namespace batch: 403 Forbidden: pods is forbidden/,
  );
  assert.equal(api.replicas, 2, 'replicas not lowered when the pods could not be marked');

  // a pod gone between the list and its patch (404) has nothing left to mark: the round goes on
  api.failWith = {
    match: /^PATCH \/api\/v1\/.*\/pods\/batchgen-worker-7d9-a$/,
    status: 404,
    message: 'pods "batchgen-worker-7d9-a" not found',
  };
  await driver.apply(scaleDown, STATE);
  assert.equal(api.replicas, 1);
});

test('options: namespace and deployment name override the defaults; a bad cost order is refused', { skip }, async () => {
  const api = await new FakeApiServer().start();
  servers.push(api);
  const driver = await createKubernetesDriver({ kubeConfig: kubeConfig(api.url), namespace: 'other', deployment: 'pool' });
  assert.equal(driver.namespace, 'other');
  assert.equal(driver.deployment, 'pool');
  await assert.rejects(driver.running(), /get deployment pool in namespace other: 404/);
  assert.equal(api.received[0].path, '/apis/apps/v1/namespaces/other/deployments/pool');
  const badCosts: KubernetesDriverOptions = { kubeConfig: kubeConfig(api.url), stopCost: 5, keepCost: 0 };
  await assert.rejects(createKubernetesDriver(badCosts), /must be an integer below keep/);
});

test('selectorString and deletionCostChanges', () => {
  assert.equal(
    selectorString({
      matchLabels: { app: 'w', tier: 'gpu' },
      matchExpressions: [
        { key: 'zone', operator: 'In', values: ['a', 'b'] },
        { key: 'spot', operator: 'DoesNotExist' },
      ],
    }),
    'app=w,tier=gpu,zone in (a,b),!spot',
  );
  assert.throws(() => selectorString({}), /empty selector/);
  const pods = [
    { metadata: { name: 'a' } },
    { metadata: { name: 'b', annotations: { [POD_DELETION_COST]: '-1000' } } },
    { metadata: { name: 'c', annotations: { [POD_DELETION_COST]: '7' } } },
  ];
  assert.deepEqual(deletionCostChanges(pods, new Set(['b']), -1000, 0), [{ pod: 'c', cost: '0' }]);
  assert.deepEqual(deletionCostChanges(pods, new Set(['a']), -1000, 0), [
    { pod: 'a', cost: '-1000' },
    { pod: 'b', cost: '0' },
    { pod: 'c', cost: '0' },
  ]);
});

test('satisfiesAtLeast: the engines check the client is loaded behind', () => {
  assert.equal(satisfiesAtLeast('>=22.19.0', '20.20.2'), false);
  assert.equal(satisfiesAtLeast('>=22.19.0', '22.18.9'), false);
  assert.equal(satisfiesAtLeast('>=22.19.0', '22.19.0'), true);
  assert.equal(satisfiesAtLeast('>=20.18.1', '20.20.2'), true);
  assert.equal(satisfiesAtLeast('>= 18.0.0', '24.1.0'), true);
  assert.equal(satisfiesAtLeast('^18 || >=20', '16.0.0'), true, 'another form of range is not judged here');
});

test('createDriver (what --driver kubernetes builds) outside a pod: a clear error, not a connection attempt', { skip }, async () => {
  const saved = process.env.KUBERNETES_SERVICE_HOST;
  delete process.env.KUBERNETES_SERVICE_HOST;
  try {
    const ctx = { models: ['tiny=/models/tiny'], redisUrl: 'redis://127.0.0.1:6379', prefix: 'batchgen', workerArgs: [] };
    await assert.rejects(createDriver(ctx, {}), (e: unknown) => {
      assert.ok(e instanceof BatchgenError);
      assert.equal(e.code, 'invalid_config');
      assert.match(e.message, /runs in a pod \(KUBERNETES_SERVICE_HOST is not set\)/);
      return true;
    });
  } finally {
    if (saved !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved;
  }
});
