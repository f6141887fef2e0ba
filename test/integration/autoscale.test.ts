/**
 * The autoscaler with a real redis-server and real `worker --assigned` processes started by the
 * local driver: from zero workers a batch over three keys gets workers, completes exactly once and
 * the workers stop when idle; a worker stopped while it runs a batch loses no job; a worker killed
 * with SIGKILL has its keys assigned again and its jobs complete; `--dry-run --once --json` prints
 * a plan and writes nothing.
 */
import { until } from '../helpers/until.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Autoscaler } from '../../src/autoscaler/autoscaler.js';
import { LocalDriver } from '../../src/autoscaler/drivers/local.js';
import { GenerationClient } from '../../src/producer/client.js';
import { Keyspace } from '../../src/shared/keys.js';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, runCli } from '../helpers/processes.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let redis: RedisServer;
let model: string;
const quiet = pino({ level: 'silent' });
const scalers: Autoscaler[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** short locks, so that the jobs of a killed worker come back soon through BullMQ's stalled check */
const WORKER_ARGS = ['--batch-sizes', '1,2', '--lock-ms', '1500', '--stalled-interval-ms', '500'];

before(async () => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  redis = await startRedisServer();
});

after(async () => {
  for (const s of scalers) await s.close();
  await redis?.stop();
});

function scaler(prefix: string, opts: { idleSeconds?: number; maxWorkers?: number; faults?: object } = {}) {
  const driver = new LocalDriver({
    models: [`tiny=${model}`],
    redisUrl: redis.url,
    prefix,
    workerArgs: WORKER_ARGS,
    workerLogs: null,
    env: opts.faults ? { BATCHGEN_FAULTS: JSON.stringify(opts.faults) } : {},
    logger: quiet,
  });
  const plans: { action: string; id: string }[][] = [];
  const logs: { msg?: string; worker?: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line)) });
  const s = new Autoscaler({
    models: [{ name: 'tiny', dir: model }],
    redisUrl: redis.url,
    prefix,
    driver,
    intervalS: 0.5,
    settings: { idleSeconds: opts.idleSeconds ?? 2, maxWorkers: opts.maxWorkers ?? 3 },
    logger,
    onPlan: (p) => plans.push(p.workers.map((w) => ({ action: w.action, id: w.id }))),
  });
  scalers.push(s);
  return { s, driver, plans, logs };
}

const client = (prefix: string) =>
  GenerationClient.connect({ redisUrl: redis.url, prefix, models: [{ name: 'tiny', dir: model }], logger: quiet });

/** n requests on each of three keys (the new-token buckets 16, 32 and 64). */
const threeKeys = (tag: string, n: number) =>
  [6, 20, 40].flatMap((maxNew) =>
    Array.from({ length: n }, (_, i) => ({
      custom_id: `${tag}-${maxNew}-${i}`,
      model: 'tiny',
      prompt: `${tag} request ${i}`,
      max_new_tokens: maxNew,
    })),
  );

/** The custom_ids that have a result, and the number of result entries. */
async function resultIds(raw: Redis, ks: Keyspace, batchId: string): Promise<string[]> {
  return (await raw.hkeys(ks.batch(batchId).results)).sort();
}

test('from zero workers: a batch over three keys starts workers, completes exactly once, and every worker stops when idle', {
  skip,
  timeout: 120_000,
}, async () => {
  const c = await client('as0');
  const raw = new Redis(redis.url);
  const ks = new Keyspace({ prefix: 'as0' });
  try {
    const { s, driver, plans } = scaler('as0');
    await s.start();
    await sleep(1200);
    assert.deepEqual(await driver.running(), [], 'no work: no worker');
    const reqs = threeKeys('a', 4);
    const h = await c.submitBatch(reqs, { batchId: 'as0' });
    assert.equal(h.report!.keys.length, 3);
    const rec = await h.wait({ timeoutMs: 90_000 });
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', reqs.length, 0]);
    assert.deepEqual(await resultIds(raw, ks, 'as0'), reqs.map((r) => r.custom_id).sort(), 'one result per custom_id');
    const started = new Set(
      plans
        .flat()
        .filter((w) => w.action === 'start')
        .map((w) => w.id),
    );
    assert.ok(started.size >= 1, 'workers were started');
    await until('every worker stopped after its idle time', async () => (await driver.running()).length === 0, 30_000);
    const stopped = new Set(
      plans
        .flat()
        .filter((w) => w.action === 'stop')
        .map((w) => w.id),
    );
    assert.deepEqual([...stopped].sort(), [...started].sort(), 'each worker started was stopped by a plan');
    assert.deepEqual(await raw.keys(`${ks.prefix}:assign:*`), [], 'no assignment is left');
    assert.equal(Number(await raw.get(ks.arrivals(h.report!.keys[0]))), 4, 'the producer counted the jobs of each key');
  } finally {
    raw.disconnect();
    await c.close();
  }
});

test('a worker stopped while it runs a batch loses no job: the batch in hand finishes, its key goes to another worker', {
  skip,
  timeout: 120_000,
}, async () => {
  const c = await client('as1');
  const raw = new Redis(redis.url);
  const ks = new Keyspace({ prefix: 'as1' });
  const { s, driver } = scaler('as1', { faults: { runDelayMs: 800 }, idleSeconds: 30 });
  try {
    await s.start();
    const reqs = Array.from({ length: 10 }, (_, i) => ({ custom_id: `s${i}`, model: 'tiny', prompt: `stop ${i}`, max_new_tokens: 6 }));
    const h = await c.submitBatch(reqs, { batchId: 'as1' });
    const id = await until('a worker started', async () => (await driver.running())[0]);
    const p = driver.process(id)!;
    const started = await p.waitForMsg('batch started', 60_000);
    // the scale-down path of the driver: a plan that stops this worker
    await driver.apply({ desired_workers: 0, workers: [{ id, keys: [], action: 'stop' }], reasons: [] }, s.lastPlan as never);
    const exit = await p.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, 'the worker drained and exited cleanly');
    const atExit = await raw.hlen(ks.batch('as1').results);
    const done = p.logs.filter((l) => l.msg === 'worker stopped');
    assert.equal(done.length, 1);
    const inHand = started.jobs as string[];
    const rec = await h.wait({ timeoutMs: 90_000 });
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', reqs.length, 0]);
    assert.deepEqual(await resultIds(raw, ks, 'as1'), reqs.map((r) => r.custom_id).sort(), 'one result per custom_id');
    const results = await raw.hgetall(ks.batch('as1').results);
    for (const j of inHand) {
      const cid = j.slice(j.indexOf('/') + 1);
      assert.match(results[cid], new RegExp(`"worker":"${id}"`), `${cid} was in hand at the stop and finished there`);
    }
    // (the policy may give the new worker the stopped one's id again: counted by results, not by id)
    assert.ok(atExit < reqs.length, `the stopped worker left jobs (${reqs.length - atExit}) for the worker that took its key`);
  } finally {
    // its workers (idle for 30 s) must not outlive the test: later tests compare Redis keys
    await s.close();
    raw.disconnect();
    await c.close();
  }
});

test('a worker killed with SIGKILL: its assignment is deleted, its keys assigned again, and its jobs complete', {
  skip,
  timeout: 120_000,
}, async () => {
  const c = await client('as2');
  const raw = new Redis(redis.url);
  const ks = new Keyspace({ prefix: 'as2' });
  const { s, driver, logs } = scaler('as2', { faults: { runDelayMs: 800 }, idleSeconds: 30 });
  try {
    await s.start();
    const reqs = Array.from({ length: 8 }, (_, i) => ({ custom_id: `k${i}`, model: 'tiny', prompt: `kill ${i}`, max_new_tokens: 6 }));
    const h = await c.submitBatch(reqs, { batchId: 'as2' });
    const key = h.report!.keys[0];
    const victim = await until('a worker started', async () => (await driver.running())[0]);
    const p = driver.process(victim)!;
    await p.waitForMsg('batch started', 60_000);
    p.signal('SIGKILL');
    assert.equal((await p.exited).signal, 'SIGKILL');
    // its heartbeat expires: the worker is gone and its assignment set deleted (a new worker may get its id again)
    await until(
      'the dead worker found gone',
      async () => logs.some((l) => l.worker === victim && l.msg?.startsWith('worker gone')),
      30_000,
    );
    await until('its key assigned to a live worker process', async () => {
      for (const x of await driver.running()) {
        const q = driver.process(x);
        if (q && q.pid !== p.pid && (await raw.sismember(ks.assignment(x), key)) === 1) return x;
      }
      return undefined;
    });
    const rec = await h.wait({ timeoutMs: 90_000 });
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', reqs.length, 0]);
    assert.deepEqual(await resultIds(raw, ks, 'as2'), reqs.map((r) => r.custom_id).sort(), 'one result per custom_id');
  } finally {
    // its workers (idle for 30 s) must not outlive the test: later tests compare Redis keys
    await s.close();
    raw.disconnect();
    await c.close();
  }
});

test('autoscale --dry-run --once --json prints one plan of the contract shape and writes nothing to Redis', { skip }, async () => {
  const c = await client('asd');
  const raw = new Redis(redis.url);
  try {
    const h = await c.submitBatch(threeKeys('d', 2), { batchId: 'asd' });
    const keys = [...h.report!.keys].sort();
    // keys of earlier tests (heartbeats) may expire meanwhile: compare this prefix's keys, and let no new key appear anywhere
    const mine = async () => JSON.stringify((await raw.keys('asd:*')).sort());
    const names = await mine();
    const everywhere = new Set(await raw.keys('*'));
    const r = runCli(['autoscale', '--model', `tiny=${model}`, '--redis', redis.url, '--prefix', 'asd', '--dry-run', '--once', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 1, 'one plan');
    const plan = JSON.parse(lines[0]) as {
      desired_workers: unknown;
      workers: { id: unknown; keys: unknown; action: unknown }[];
      reasons: unknown;
    };
    assert.equal(typeof plan.desired_workers, 'number');
    assert.ok((plan.desired_workers as number) >= 1, 'work with no worker: workers wanted');
    assert.ok(Array.isArray(plan.workers) && plan.workers.length >= 1);
    for (const w of plan.workers) {
      assert.equal(typeof w.id, 'string');
      assert.ok(['keep', 'start', 'stop'].includes(w.action as string));
      assert.ok(Array.isArray(w.keys));
      for (const k of w.keys as unknown[]) assert.match(String(k), /^tiny:p\d+:n\d+:(greedy|sample|beam\d+)$/);
    }
    assert.deepEqual([...new Set(plan.workers.flatMap((w) => w.keys as string[]))].sort(), keys, 'every key with work is placed');
    assert.ok(Array.isArray(plan.reasons) && (plan.reasons as unknown[]).every((x) => typeof x === 'string'));
    assert.equal(await mine(), names, 'no key of its prefix written or removed');
    assert.deepEqual(
      (await raw.keys('*')).filter((k) => !everywhere.has(k)),
      [],
      'no new key anywhere',
    );
  } finally {
    raw.disconnect();
    await c.close();
  }
});
