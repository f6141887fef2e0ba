/**
 * The whole path with the real compiler: 300 mixed requests (several prompt buckets; greedy,
 * sampling and beam search) through two worker processes and a real redis-server. Every custom_id
 * gets exactly one result, greedy results equal `batchgen generate`, and the workers report no
 * retrace and no compile after warm-up.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, runCli, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { Keyspace } from '../../src/shared/keys.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let redis: RedisServer;
let model: string;
const workers: WorkerProcess[] = [];

before(async () => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  redis = await startRedisServer();
});

after(async () => {
  for (const w of workers) await w.stop();
  await redis?.stop();
});

const WORDS = [
  'the',
  'model',
  'queue',
  'tensor',
  'compiles',
  'once',
  'and',
  'runs',
  'many',
  'batches',
  'of',
  'text',
  'shapes',
  'stay',
  'static',
];

function prompt(i: number): string {
  // lengths from 2 to ~40 tokens: buckets 16, 32 and 64
  const n = 2 + ((i * 7919) % 37);
  return Array.from({ length: n }, (_, j) => WORDS[(i * 31 + j * 17) % WORDS.length]).join(' ');
}

test('300 mixed requests through two worker processes: one result each, greedy equals generate, no retrace', {
  skip,
  timeout: 600_000,
}, async () => {
  const models = [`tiny=${model}`];
  workers.push(
    spawnWorker(redis.url, models, ['--prefix', 'e2e', '--id', 'w1']),
    spawnWorker(redis.url, models, ['--prefix', 'e2e', '--id', 'w2']),
  );
  const requests: Record<string, unknown>[] = [];
  const greedy: { id: string; prompt: string }[] = [];
  for (let i = 0; i < 300; i++) {
    const kind = i % 10;
    const p = prompt(i);
    if (kind < 6) {
      requests.push({ custom_id: `g${i}`, model: 'tiny', prompt: p, max_new_tokens: 8 });
      greedy.push({ id: `g${i}`, prompt: p });
    } else if (kind < 8) {
      requests.push({
        custom_id: `s${i}`,
        model: 'tiny',
        prompt: p,
        max_new_tokens: 6,
        do_sample: true,
        top_p: 0.9,
        temperature: 0.8,
        seed: i,
      });
    } else if (kind < 9) {
      requests.push({ custom_id: `b${i}`, model: 'tiny', prompt: p, max_new_tokens: 5, num_beams: 2 });
    } else {
      requests.push({
        custom_id: `o${i}`,
        method: 'POST',
        url: '/v1/completions',
        body: { model: 'tiny', prompt: p, max_tokens: 6, temperature: 0 },
      });
    }
  }
  const client = await GenerationClient.connect({
    redisUrl: redis.url,
    prefix: 'e2e',
    models: [{ name: 'tiny', dir: model }],
    logger: pino({ level: 'silent' }),
  });
  try {
    const h = await client.submitBatch(requests, { batchId: 'mixed300' });
    assert.equal(h.report!.enqueued, 300);
    assert.ok(h.report!.keys.length >= 6, `keys ${h.report!.keys.join(' ')}`);
    const rec = await h.wait({ timeoutMs: 480_000, pollMs: 250 });
    assert.equal(rec.status, 'completed');
    assert.deepEqual([rec.counts.total, rec.counts.completed, rec.counts.failed], [300, 300, 0]);

    const results = [];
    for await (const r of h.results()) results.push(r);
    assert.equal(results.length, 300);
    const ids = new Set(results.map((r) => r.custom_id));
    assert.equal(ids.size, 300);
    for (const r of requests) assert.ok(ids.has(r.custom_id as string));
    for (const r of results)
      assert.ok(
        typeof r.queued_ms === 'number' && r.queued_ms >= 0 && r.queued_ms <= r.finished_at - r.created_at,
        `${r.custom_id}: queued_ms ${r.queued_ms} within its enqueue-to-result time`,
      );
    const raw = new Redis(redis.url);
    const ks = new Keyspace({ prefix: 'e2e' });
    assert.equal(await raw.hlen(ks.batch('mixed300').results), 300);
    assert.equal(await raw.llen(ks.batch('mixed300').order), 300);

    // greedy: the same ids as in-process generate, whatever the batch and bucket each row ran in
    const byId = new Map(results.map((r) => [r.custom_id, r]));
    const sample = greedy.filter((_, i) => i % 6 === 0).slice(0, 24);
    const gen = runCli(['generate', '--model', model, '--max-new-tokens', '8', '--json', ...sample.flatMap((g) => ['--prompt', g.prompt])]);
    assert.equal(gen.code, 0, gen.stderr);
    const lines = gen.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, sample.length);
    sample.forEach((g, i) => {
      const r = byId.get(g.id)!;
      assert.deepEqual(r.token_ids, lines[i].token_ids, `greedy ${g.id}`);
      assert.equal(r.text, lines[i].text);
      assert.equal(r.finish_reason, lines[i].finish_reason);
    });
    // seeded sampling is reproducible: a second batch with the same seeds gives the same ids
    const again = requests.filter((r) => String(r.custom_id).startsWith('s')).slice(0, 8);
    const h2 = await client.submitBatch(again, { batchId: 'sample-again' });
    await h2.wait({ timeoutMs: 120_000 });
    for await (const r of h2.results()) assert.deepEqual(r.token_ids, byId.get(r.custom_id)!.token_ids, `sample ${r.custom_id}`);

    // workers: warm before work, no compile after warm-up, no retrace, both served
    for (const w of workers) await w.stop();
    const stats = await Promise.all(['w1', 'w2'].map(async (id) => JSON.parse((await raw.get(ks.worker(id)))!)));
    for (const s of stats) {
      assert.equal(s.retraces, 0, `retraces of ${s.id}`);
      assert.equal(s.compiles, s.keys.length * 4, `compiles of ${s.id}: ${s.compiles} for ${s.keys.length} keys`);
      assert.equal(s.duplicates, 0);
    }
    assert.equal(stats[0].jobs_completed + stats[1].jobs_completed, 300 + again.length);
    assert.ok(
      stats.every((s) => s.jobs_completed > 0),
      'both workers served jobs',
    );
    for (const w of workers) {
      const warm = w.logs.findIndex((l) => l.msg === 'key warm');
      const firstBatch = w.logs.findIndex((l) => l.msg === 'batch started');
      assert.ok(warm >= 0 && warm < firstBatch, 'a key is warm before its first batch');
      // every batch of a key starts after that key was warmed
      for (const b of w.logs.filter((l) => l.msg === 'batch started')) {
        const kw = w.logs.findIndex((l) => l.msg === 'key warm' && l.key === b.key);
        assert.ok(kw >= 0 && kw < w.logs.indexOf(b));
      }
      assert.equal((await w.exited).code, 0);
    }
    raw.disconnect();
  } finally {
    await client.close();
  }
});
