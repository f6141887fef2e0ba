/**
 * The autoscaler's HTTP endpoints, on a dry run against a real redis-server: `/scale` gives the
 * desired count of the last plan (what KEDA's metrics-api scaler reads), `/metrics` passes
 * Prometheus's own `promtool check metrics` and counts the decisions, `/healthz` answers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Autoscaler } from '../../src/autoscaler/autoscaler.js';
import { GenerationClient } from '../../src/producer/client.js';
import { hasRedisServer, startRedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel } from '../helpers/processes.js';

const hasPromtool = spawnSync('sh', ['-c', 'command -v promtool']).status === 0;
const skip = (!hasRedisServer() && 'redis-server is not installed') || (!hasPromtool && 'promtool is not installed (Debian: prometheus)');
const quiet = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('autoscaler endpoints: /scale follows the plan, /metrics passes promtool, /healthz', { skip, timeout: 120_000 }, async () => {
  const model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  const redis = await startRedisServer();
  const prefix = 'endpoints';
  const s = new Autoscaler({
    models: [{ name: 'tiny', dir: model }],
    redisUrl: redis.url,
    prefix,
    dryRun: true,
    intervalS: 0.2,
    metricsPort: 0,
    settings: { maxWorkers: 4 },
    logger: quiet,
  });
  const client = await GenerationClient.connect({ redisUrl: redis.url, prefix, models: [{ name: 'tiny', dir: model }], logger: quiet });
  try {
    await s.start();
    const base = `http://127.0.0.1:${s.port}`;
    const scale = async () => (await (await fetch(`${base}/scale`)).json()) as { desired_workers: number };
    // no work: scale to zero (after the first pass)
    for (let i = 0; i < 50 && (await fetch(`${base}/scale`)).status !== 200; i++) await sleep(100);
    assert.deepEqual(await scale(), { desired_workers: 0 });
    // work on two keys: the plan wants workers, and /scale says so
    const reqs = [6, 40].flatMap((n) =>
      Array.from({ length: 5 }, (_, i) => ({ custom_id: `k${n}-${i}`, model: 'tiny', prompt: `p ${i}`, max_new_tokens: n })),
    );
    await client.submitBatch(reqs, { batchId: 'endpoints-1' });
    let desired = 0;
    for (let i = 0; i < 50 && desired === 0; i++) {
      await sleep(100);
      desired = (await scale()).desired_workers;
    }
    assert.ok(desired >= 1 && desired <= 4, `desired ${desired}`);
    const text = await (await fetch(`${base}/metrics`)).text();
    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    assert.match(text, new RegExp(`^batchgen_autoscaler_desired_workers ${desired}$`, 'm'));
    assert.match(text, /^batchgen_autoscaler_decisions_total\{reason="[a-z_-]+"\} [1-9]/m);
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.equal((await fetch(`${base}/nothing`)).status, 404);
  } finally {
    await client.close();
    await s.close();
    await redis.stop();
  }
});
