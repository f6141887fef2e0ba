/**
 * `/scale` for KEDA's metrics-api scaler: the plan's desired_workers as JSON, 503 before a plan or
 * when reading it fails, 405 for a method KEDA does not use.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { handleScale, type PlanSource, SCALE_PATH, scaleResponse } from '../../src/autoscaler/scale-endpoint.js';
import type { Plan } from '../../src/autoscaler/types.js';

function plan(desired: number): Plan {
  const workers = Array.from({ length: desired + 1 }, (_, i) => ({
    id: `w${i}`,
    keys: [`tiny:p16:n16:greedy`],
    action: i < desired ? ('keep' as const) : ('stop' as const),
  }));
  return { desired_workers: desired, workers, reasons: ['test'] };
}

async function serve(getPlan: PlanSource): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    if (req.url === SCALE_PATH) void handleScale(req, res, getPlan);
    else res.writeHead(404).end();
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : 0;
  return { server, url: `http://127.0.0.1:${port}${SCALE_PATH}` };
}

test('scaleResponse carries desired_workers and nothing else', () => {
  for (const n of [0, 1, 7]) assert.deepEqual(scaleResponse(plan(n)), { desired_workers: n });
});

test('GET /scale answers the current plan, and follows it as it changes', async () => {
  let current: Plan | null = null;
  const { server, url } = await serve(() => current);
  try {
    const before = await fetch(url);
    assert.equal(before.status, 503);
    assert.match(((await before.json()) as { error: string }).error, /no plan yet/);

    current = plan(3);
    const r = await fetch(url);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await r.json(), { desired_workers: 3 });

    current = plan(0);
    assert.deepEqual(await (await fetch(url)).json(), { desired_workers: 0 });
  } finally {
    server.close();
  }
});

test('a plan source that fails gives 503 with its reason; POST gives 405; HEAD has no body', async () => {
  let fail = true;
  const { server, url } = await serve(async () => {
    if (fail) throw new Error('redis down');
    return plan(2);
  });
  try {
    const r = await fetch(url);
    assert.equal(r.status, 503);
    assert.match(((await r.json()) as { error: string }).error, /redis down/);

    fail = false;
    const post = await fetch(url, { method: 'POST', body: '{}' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
    await post.body?.cancel();

    const head = await fetch(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.ok(Number(head.headers.get('content-length')) > 0);
  } finally {
    server.close();
  }
});
