/**
 * Faults, with real worker processes and a real redis-server: kill -9 in the middle of a batch,
 * SIGTERM during a batch, a warm-up longer than the lock duration, payloads written straight into
 * Redis, and a job that crashes its batch. Faults are injected with BATCHGEN_FAULTS (test only).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { Keyspace } from '../../src/shared/keys.js';
import type { ResultRecord } from '../../src/shared/schemas.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let redis: RedisServer;
let model: string;
const workers: WorkerProcess[] = [];
const quiet = pino({ level: 'silent' });
const FAST_LOCKS = ['--lock-ms', '1500', '--stalled-interval-ms', '500'];

before(async () => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  redis = await startRedisServer();
});

after(async () => {
  for (const w of workers) await w.stop(5000);
  await redis?.stop();
});

function worker(prefix: string, extra: string[] = [], faults?: object): WorkerProcess {
  const w = spawnWorker(
    redis.url,
    [`tiny=${model}`],
    ['--prefix', prefix, ...extra],
    faults ? { BATCHGEN_FAULTS: JSON.stringify(faults) } : {},
  );
  workers.push(w);
  return w;
}

function requests(n: number, prefix = 'r', extra: Record<string, unknown> = {}) {
  return Array.from({ length: n }, (_, i) => ({
    custom_id: `${prefix}${i}`,
    model: 'tiny',
    prompt: `request number ${i}`,
    max_new_tokens: 6,
    ...extra,
  }));
}

async function allResults(c: GenerationClient, batchId: string): Promise<ResultRecord[]> {
  const out: ResultRecord[] = [];
  for await (const chunk of c.store.results(batchId)) out.push(...chunk);
  return out;
}

test('kill -9 of a worker in the middle of a batch: every request completes exactly once, in bounded time', {
  skip,
  timeout: 180_000,
}, async () => {
  const c = await GenerationClient.connect({ redisUrl: redis.url, prefix: 'k9', models: [{ name: 'tiny', dir: model }], logger: quiet });
  try {
    const a = worker('k9', [...FAST_LOCKS, '--id', 'victim'], { runDelayMs: 3000 });
    const h = await c.submitBatch(requests(24), { batchId: 'k9' });
    const started = await a.waitForMsg('batch started');
    const inFlight = started.jobs as string[];
    assert.ok(inFlight.length >= 1);
    process.kill(a.pid, 'SIGKILL');
    assert.equal((await a.exited).signal, 'SIGKILL');
    const t0 = Date.now();
    worker('k9', [...FAST_LOCKS, '--id', 'rescuer']);
    const rec = await h.wait({ timeoutMs: 90_000 });
    const took = Date.now() - t0;
    assert.equal(rec.status, 'completed');
    assert.deepEqual([rec.counts.completed, rec.counts.failed], [24, 0]);
    const res = await allResults(c, 'k9');
    assert.equal(res.length, 24);
    assert.equal(new Set(res.map((r) => r.custom_id)).size, 24);
    // the jobs of the killed batch were delivered again (alone), the others once
    for (const r of res) {
      const wasInFlight = inFlight.includes(`k9/${r.custom_id}`);
      assert.equal(r.deliveries, wasInFlight ? 2 : 1, `${r.custom_id} deliveries ${r.deliveries}`);
      assert.equal(r.worker, 'rescuer');
    }
    assert.ok(took < 60_000, `recovered in ${took} ms`);
  } finally {
    await c.close();
  }
});

test('SIGTERM during a batch: the batch completes, the process exits, nothing stalls', { skip, timeout: 180_000 }, async () => {
  const c = await GenerationClient.connect({ redisUrl: redis.url, prefix: 'term', models: [{ name: 'tiny', dir: model }], logger: quiet });
  const raw = new Redis(redis.url);
  try {
    const a = worker('term', [...FAST_LOCKS, '--id', 'leaving'], { runDelayMs: 2000 });
    const h = await c.submitBatch(requests(12), { batchId: 'term' });
    const started = await a.waitForMsg('batch started');
    const inFlight = started.jobs as string[];
    a.signal('SIGTERM');
    const t0 = Date.now();
    const exit = await a.exited;
    assert.equal(exit.code, 0);
    assert.ok(Date.now() - t0 < 15_000);
    // the batch in hand was finished and written
    const after = await allResults(c, 'term');
    for (const j of inFlight)
      assert.ok(
        after.some((r) => `term/${r.custom_id}` === j),
        `${j} finished before exit`,
      );
    const ref = new Keyspace({ prefix: 'term' }).queue('tiny:p16:n16:greedy');
    assert.equal(await raw.llen(ref.activeList), 0, 'no job left active');
    assert.ok(a.logs.some((l) => l.msg === 'worker stopped'));
    // another worker finishes the rest: nothing was delivered twice
    worker('term', [...FAST_LOCKS, '--id', 'staying']);
    const rec = await h.wait({ timeoutMs: 60_000 });
    assert.deepEqual([rec.status, rec.counts.completed], ['completed', 12]);
    const res = await allResults(c, 'term');
    assert.equal(res.length, 12);
    for (const r of res) assert.equal(r.deliveries, 1, `${r.custom_id} delivered ${r.deliveries} times`);
  } finally {
    raw.disconnect();
    await c.close();
  }
});

test('a warm-up longer than the lock duration causes no second delivery', { skip, timeout: 180_000 }, async () => {
  const c = await GenerationClient.connect({ redisUrl: redis.url, prefix: 'warm', models: [{ name: 'tiny', dir: model }], logger: quiet });
  try {
    const reqs = [...requests(15, 'g'), ...requests(15, 's', { do_sample: true, seed: 1 })];
    const h = await c.submitBatch(reqs, { batchId: 'warm' });
    // each variant's compile blocks the worker's event loop 600 ms: 2.4 s per key, the lock is 1 s
    const locks = ['--lock-ms', '1000', '--stalled-interval-ms', '300'];
    const w1 = worker('warm', [...locks, '--id', 'slow1'], { compileDelayMs: 600 });
    const w2 = worker('warm', [...locks, '--id', 'slow2'], { compileDelayMs: 600 });
    const rec = await h.wait({ timeoutMs: 120_000 });
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', 30, 0]);
    const res = await allResults(c, 'warm');
    assert.equal(res.length, 30);
    for (const r of res) assert.equal(r.deliveries, 1, `${r.custom_id} delivered ${r.deliveries} times`);
    await Promise.all([w1.stop(), w2.stop()]);
    for (const w of [w1, w2]) {
      assert.ok(!w.logs.some((l) => l.msg === 'second delivery: result already written, not written again'));
      assert.ok(!w.logs.some((l) => String(l.msg).startsWith('lock renewal failed')));
    }
  } finally {
    await c.close();
  }
});

test('payloads written straight into Redis fail once with their reason; the others complete', { skip, timeout: 120_000 }, async () => {
  const c = await GenerationClient.connect({ redisUrl: redis.url, prefix: 'raw', models: [{ name: 'tiny', dir: model }], logger: quiet });
  const raw = new Redis(redis.url);
  const ks = new Keyspace({ prefix: 'raw' });
  const ref = ks.queue('tiny:p16:n16:greedy');
  const q = new Queue(ref.bullName, { connection: { url: redis.url }, prefix: ref.bullPrefix });
  try {
    const h = await c.submitBatch(requests(3, 'good'), { batchId: 'rawb' });
    const good = (await q.getJob('rawb/good0'))!.data;
    const opts = { attempts: 3, backoff: { type: 'fixed', delay: 10 } };
    await q.add('gen', { placeholder: true }, { ...opts, jobId: 'rawb/badjson' });
    await raw.hset(`${ref.name}:rawb/badjson`, 'data', '{"v": 1, "custom_id": ');
    await q.add('gen', { hello: 'world' }, { ...opts, jobId: 'rawb/schema' });
    await q.add('gen', { ...good, custom_id: 'huge', prompt_ids: new Array(5000).fill(1) }, { ...opts, jobId: 'rawb/huge' });
    await q.add('gen', { ...good, custom_id: 'path', model: '../../../../etc/passwd' }, { ...opts, jobId: 'rawb/path' });
    await q.add('gen', { ...good, custom_id: 'dir', model: model }, { ...opts, jobId: 'rawb/dir' });
    await q.add('gen', { ...good, custom_id: 'wrongkey', key: 'tiny:p32:n16:greedy' }, { ...opts, jobId: 'rawb/wrongkey' });
    await q.add('gen', { ...good, custom_id: 'vocab', prompt_ids: [1, 9_999_999] }, { ...opts, jobId: 'rawb/vocab' });
    const w = worker('raw', ['--id', 'checker']);
    const rec = await h.wait({ timeoutMs: 60_000 });
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', 3, 0]);
    const expected: Record<string, RegExp> = {
      'rawb/badjson': /not JSON/,
      'rawb/schema': /schema/,
      'rawb/huge': /schema|prompt bucket/,
      'rawb/path': /model/,
      'rawb/dir': /model/,
      'rawb/wrongkey': /not the key of its queue/,
      'rawb/vocab': /vocabulary/,
    };
    for (let i = 0; i < 100 && (await q.getFailedCount()) < Object.keys(expected).length; i++) await new Promise((r) => setTimeout(r, 100));
    // read the job hashes directly: BullMQ itself cannot parse the job whose data is not JSON
    const failed = await raw.zrange(`${ref.name}:failed`, '0', '-1');
    assert.deepEqual(failed.sort(), Object.keys(expected).sort());
    for (const id of failed) {
      const [reason, made, started] = await raw.hmget(`${ref.name}:${id}`, 'failedReason', 'atm', 'ats');
      assert.match(reason!, /invalid payload/, id);
      assert.match(reason!, expected[id], `${id}: ${reason}`);
      assert.equal(made, '1', `${id} was retried`);
      assert.equal(started, '1', `${id} was delivered more than once`);
    }
    assert.equal(w.logs.filter((l) => l.msg === 'invalid payload: failed without retry').length, Object.keys(expected).length);
    // a payload never names a file: the path-like model names were refused before any use
    assert.ok(!w.stderr.some((l) => /ENOENT|EACCES|passwd:/.test(l)));
  } finally {
    await q.close();
    raw.disconnect();
    await c.close();
  }
});

test('a job that crashes its batch is isolated; its neighbours complete', { skip, timeout: 120_000 }, async () => {
  const c = await GenerationClient.connect({
    redisUrl: redis.url,
    prefix: 'poison',
    models: [{ name: 'tiny', dir: model }],
    logger: quiet,
    attempts: 2,
    backoffMs: 100,
  });
  try {
    const reqs = requests(8, 'n');
    reqs[3] = { ...reqs[3], custom_id: 'poison' };
    const w = worker('poison', ['--id', 'iso', '--max-wait-ms', '200'], { throwOn: ['poison'] });
    await w.waitForMsg('warm: taking jobs');
    const h = await c.submitBatch(reqs, { batchId: 'poison' });
    const rec = await h.wait({ timeoutMs: 60_000 });
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', 7, 1]);
    const errs = await h.errors();
    assert.equal(errs.length, 1);
    assert.equal(errs[0].custom_id, 'poison');
    assert.equal(errs[0].error.code, 'generation_failed');
    assert.match(errs[0].error.message, /fault injection/);
    assert.equal(errs[0].line, 4);
    const res = await allResults(c, 'poison');
    assert.deepEqual(res.map((r) => r.custom_id).sort(), ['n0', 'n1', 'n2', 'n4', 'n5', 'n6', 'n7']);
    assert.ok(w.logs.some((l) => l.msg === 'batch failed: running its jobs one by one'));
    assert.ok(w.logs.some((l) => l.msg === 'job failed: retrying with backoff' && l.job === 'poison/poison'));
    assert.ok(w.logs.some((l) => l.msg === 'job failed' && l.job === 'poison/poison'));
  } finally {
    await c.close();
  }
});
