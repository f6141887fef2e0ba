/**
 * Key holding and stuck batches, with a real redis-server and real worker processes: a worker at
 * --max-keys releases idle keys for new ones, the registry is pruned of keys without work (never of
 * one with work), and a key whose compile fails shows in `batchgen status`, handle.health() and the
 * worker's /healthz.
 */
import { until } from '../helpers/until.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { freePort, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, runCli, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { Keyspace } from '../../src/shared/keys.js';
import { pruneRegistryEntry } from '../../src/shared/registry.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let redis: RedisServer;
let model: string;
const workers: WorkerProcess[] = [];
const quiet = pino({ level: 'silent' });

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

const client = (prefix: string) =>
  GenerationClient.connect({ redisUrl: redis.url, prefix, models: [{ name: 'tiny', dir: model }], logger: quiet });
const requests = (tag: string, n: number, maxNew: number) =>
  Array.from({ length: n }, (_, i) => ({
    custom_id: `${tag}${i}`,
    model: 'tiny',
    prompt: `key ${tag} request ${i}`,
    max_new_tokens: maxNew,
  }));

test('worker --max-keys 2: three keys submitted in sequence all complete; idle keys are released, least recently served first', {
  skip,
  timeout: 300_000,
}, async () => {
  const c = await client('mk');
  const raw = new Redis(redis.url);
  const ks = new Keyspace({ prefix: 'mk' });
  try {
    // a key that had work once and has none now: not compiled at start, and pruned (TTL 1 s)
    await raw.hset(
      ks.registry(),
      'tiny:p64:n64:greedy',
      JSON.stringify({ model: 'tiny', P: 64, N: 64, strategy: 'greedy', updated_at: 1 }),
    );
    const w = worker('mk', ['--max-keys', '2', '--batch-sizes', '1,2', '--registry-ttl-s', '1', '--id', 'mk1']);
    await w.waitForMsg('warm: taking jobs');
    const keys: string[] = [];
    for (const [tag, maxNew] of [
      ['a', 6],
      ['b', 20],
      ['c', 40],
      ['a2', 6],
    ] as const) {
      const h = await c.submitBatch(requests(tag, 3, maxNew), { batchId: `mk-${tag}` });
      assert.equal(h.report!.keys.length, 1);
      keys.push(h.report!.keys[0]);
      const rec = await h.wait({ timeoutMs: 120_000 });
      assert.deepEqual([rec.status, rec.counts.completed], ['completed', 3], `batch ${tag}`);
    }
    assert.equal(new Set(keys.slice(0, 3)).size, 3, 'three distinct keys');
    assert.equal(keys[3], keys[0]);
    const warm = w.logs.filter((l) => l.msg === 'key warm').map((l) => l.key);
    const released = w.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('key released')).map((l) => l.key);
    assert.ok(!warm.includes('tiny:p64:n64:greedy'), 'a key without work is not compiled');
    // c took the place of a (served longest ago), then a the place of b
    assert.deepEqual(warm, [keys[0], keys[1], keys[2], keys[0]]);
    assert.deepEqual(released, [keys[0], keys[1]]);
    // the heartbeat (written every 2 s) lists the two keys held, and no refusal
    const want = JSON.stringify([keys[0], keys[2]].sort());
    await until('the heartbeat to list the keys held', async () => {
      const beat = JSON.parse((await raw.get(ks.worker('mk1'))) ?? '{}') as { keys?: string[]; refused?: unknown[] };
      return JSON.stringify([...(beat.keys ?? [])].sort()) === want && beat.refused?.length === 0;
    });
    await until('the stale registry entry pruned', async () => (await raw.hexists(ks.registry(), 'tiny:p64:n64:greedy')) === 0);
  } finally {
    raw.disconnect();
    await c.close();
  }
});

test('registry pruning removes an old entry only while its queue holds no job', { skip }, async () => {
  const raw = new Redis(redis.url);
  const ks = new Keyspace({ prefix: 'pr' });
  const busy = 'tiny:p16:n16:greedy';
  const ref = ks.queue(busy);
  const q = new Queue(ref.bullName, { connection: raw, prefix: ref.bullPrefix });
  try {
    const entry = (id: string, at: number) => raw.hset(ks.registry(), id, JSON.stringify({ updated_at: at }));
    await entry(busy, 1);
    await entry('tiny:p32:n16:greedy', 1);
    await entry('tiny:p64:n16:greedy', 5000);
    await q.add('gen', { x: 1 });
    assert.equal(await pruneRegistryEntry(raw, ks, busy, 2000), false, 'a key with a waiting job stays');
    assert.equal(await pruneRegistryEntry(raw, ks, 'tiny:p64:n16:greedy', 2000), false, 'an entry written after the cutoff stays');
    assert.equal(await pruneRegistryEntry(raw, ks, 'tiny:p32:n16:greedy', 2000), true);
    assert.deepEqual(Object.keys(await raw.hgetall(ks.registry())).sort(), [busy, 'tiny:p64:n16:greedy']);
    await q.obliterate({ force: true });
    assert.equal(await pruneRegistryEntry(raw, ks, busy, 2000), true, 'once empty, it goes');
  } finally {
    await q.close();
    raw.disconnect();
  }
});

test('a key whose compile fails: status names it with its pending count, health() says unservable, /healthz is 503', {
  skip,
  timeout: 180_000,
}, async () => {
  const c = await client('cf');
  try {
    const h = await c.submitBatch(requests('f', 3, 6), { batchId: 'cf' });
    const key = h.report!.keys[0];
    const port = await freePort();
    const w = worker('cf', ['--engine', 'noop', '--metrics-port', String(port), '--id', 'cf1'], { compileFailOn: [key] });
    await w.waitForMsg('cannot compile key: not holding it for now');
    const health = await until('a diagnosis naming the failed compile', async () => {
      const d = await h.health();
      return d.find((x) => x.key === key && x.state === 'unservable') ?? null;
    });
    assert.equal(health.pending, 3);
    assert.match(health.reason, /compile failed on every worker with model tiny \(cf1: fault injection/);
    const s = runCli(['status', 'cf', '--redis', redis.url, '--prefix', 'cf']);
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /in_progress/);
    assert.ok(
      s.stdout.includes(`key ${key}: 3 pending, unservable: compile failed on every worker with model tiny (cf1: fault injection`),
      s.stdout,
    );
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 503);
    const body = (await res.json()) as { ok: boolean; worker: string; problems: { key: string; problem: string; waiting: number }[] };
    assert.deepEqual(
      [body.ok, body.worker, body.problems],
      [false, 'cf1', [{ key, problem: 'compile_failed', reason: 'fault injection: this key does not compile', waiting: 3 }]],
    );
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /\nbatchgen_keys_compile_failed 1\n/);
    assert.match(metrics, /\nbatchgen_keys_refused 0\n/);
  } finally {
    await c.close();
  }
});
