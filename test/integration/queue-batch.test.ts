/**
 * Batch runs against a real redis-server started here: validation per custom_id, resubmission,
 * cancel, results and progress, Redis down, the errors file of the CLI. The worker, where one is
 * needed, runs in-process with the noop engine (generation itself is tested in queue-e2e).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { hasRedisServer, startRedisServer, freePort, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, runCli } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { BatchWorker } from '../../src/worker/worker.js';
import { BatchgenError } from '../../src/shared/errors.js';
import { Keyspace } from '../../src/shared/keys.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let redis: RedisServer;
let tmp: string;
let model: string;

before(async () => {
  if (skip) return;
  tmp = mkdtempSync(join(tmpdir(), 'batchgen-batch-'));
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  redis = await startRedisServer();
});

after(async () => {
  await redis?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const quiet = pino({ level: 'silent' });

async function client(prefix: string, extra: Partial<Parameters<typeof GenerationClient.connect>[0]> = {}) {
  return GenerationClient.connect({ redisUrl: redis.url, prefix, models: [{ name: 'tiny', dir: model }], logger: quiet, ...extra });
}

test('invalid requests are reported by custom_id and line; the rest of the batch is enqueued', { skip }, async () => {
  const c = await client('t1');
  try {
    const h = await c.submitBatch(
      [
        { custom_id: 'ok1', model: 'tiny', prompt: 'hello', max_new_tokens: 4 },
        { custom_id: 'unknown', model: 'gpt9', prompt: 'hello' },
        { custom_id: 'toolong', model: 'tiny', prompt: 'word '.repeat(200), max_new_tokens: 4 },
        { custom_id: 'badparam', model: 'tiny', prompt: 'x', top_p: 3 },
        { custom_id: 'ok1', model: 'tiny', prompt: 'dup' },
        { custom_id: 'n2', method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: 'x', n: 2 } },
        { custom_id: 'beamsample', model: 'tiny', prompt: 'x', num_beams: 2, do_sample: true },
        { custom_id: 'beamstop', model: 'tiny', prompt: 'x', num_beams: 2, stop_strings: ['hello world'] },
        { custom_id: 'ok2', method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: 'x', temperature: 0, stop: '\n' } },
      ],
      { batchId: 'v1' },
    );
    const r = h.report!;
    assert.equal(r.enqueued, 2);
    assert.equal(r.requests, 8); // the duplicate custom_id is a rejected line, not a request
    const byId = Object.fromEntries(r.errors.map((e) => [`${e.custom_id}@${e.line}`, e.error.code]));
    assert.deepEqual(byId, {
      'unknown@2': 'unknown_model',
      'toolong@3': 'context_length_exceeded',
      'badparam@4': 'invalid_request',
      'ok1@5': 'duplicate_custom_id',
      'n2@6': 'unsupported_parameter',
      'beamsample@7': 'unsupported_parameter',
      'beamstop@8': 'unsupported_parameter',
    });
    const st = await h.status();
    assert.equal(st.status, 'in_progress');
    assert.deepEqual(
      { total: st.counts.total, failed: st.counts.failed, completed: st.counts.completed, rejected: st.counts.rejected },
      { total: 8, failed: 6, completed: 0, rejected: 1 },
    );
    const errs = await h.errors();
    assert.deepEqual(
      errs.map((e) => e.line),
      [2, 3, 4, 5, 6, 7, 8],
    );
    assert.match(errs.find((e) => e.custom_id === 'unknown')!.error.message, /gpt9/);
  } finally {
    await c.close();
  }
});

test('resubmitting a batch adds no job; cancel removes waiting jobs and the status says so', { skip }, async () => {
  const c = await client('t2');
  const reqs = Array.from({ length: 20 }, (_, i) => ({ custom_id: `r${i}`, model: 'tiny', prompt: `prompt ${i}`, max_new_tokens: 4 }));
  try {
    const h1 = await c.submitBatch(reqs, { batchId: 'b' });
    assert.equal(h1.report!.enqueued, 20);
    const q = new Queue('greedy', {
      connection: { url: redis.url },
      prefix: new Keyspace({ prefix: 't2' }).queue('tiny:p16:n16:greedy').bullPrefix,
    });
    assert.equal(await q.getWaitingCount(), 20);
    const h2 = await c.submitBatch(reqs, { batchId: 'b' });
    assert.equal(await q.getWaitingCount(), 20);
    assert.equal((await h2.status()).counts.total, 20);
    const rec = await h2.cancel();
    assert.equal(rec.status, 'cancelled');
    assert.equal(rec.counts.cancelled, 20);
    assert.equal(await q.getWaitingCount(), 0);
    // a cancelled batch is finished: its own lines again change nothing, a new one is refused
    const h3 = await c.submitBatch(reqs, { batchId: 'b' });
    assert.deepEqual([h3.report!.enqueued, h3.report!.alreadyPresent, h3.report!.status], [0, 20, 'cancelled']);
    const h4 = await c.submitBatch([{ custom_id: 'late', model: 'tiny', prompt: 'x' }], { batchId: 'b' });
    assert.equal(h4.report!.errors[0].error.code, 'batch_finished');
    assert.equal(await q.getWaitingCount(), 0);
    await q.close();
  } finally {
    await c.close();
  }
});

test('a running batch: cancel lets running jobs finish, then cancelled; results, progress and generate()', { skip }, async () => {
  const c = await client('t3');
  const lines: string[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write: (chunk, _e, cb) => {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  const w = new BatchWorker({
    redisUrl: redis.url,
    prefix: 't3',
    models: [{ name: 'tiny', dir: model }],
    engine: 'noop',
    logger,
    faults: { runDelayMs: 300 },
    registryRefreshMs: 50,
  });
  try {
    await w.start();
    const g = await c.generate({ model: 'tiny', prompt: 'hello', max_new_tokens: 3 }, { timeoutMs: 20_000 });
    assert.equal(g.token_ids.length, 3);
    assert.equal(g.finish_reason, 'length');
    assert.equal(g.usage.prompt_tokens, 1);

    const reqs = Array.from({ length: 40 }, (_, i) => ({ custom_id: `r${i}`, model: 'tiny', prompt: `p ${i}`, max_new_tokens: 2 }));
    const h = await c.submitBatch(reqs, { batchId: 'run1' });
    const seen: number[] = [];
    const first = await h.wait({ onProgress: (r) => seen.push(r.counts.completed), timeoutMs: 1 }).catch(() => null);
    assert.equal(first, null);
    // let a batch start, then cancel
    for (let i = 0; i < 100 && !lines.some((l) => l.includes('"batch started"') && l.includes('run1/')); i++)
      await new Promise((r) => setTimeout(r, 20));
    const rec = await h.cancel();
    assert.ok(['cancelling', 'cancelled'].includes(rec.status), rec.status);
    const done = await h.wait({ timeoutMs: 20_000 });
    assert.equal(done.status, 'cancelled');
    assert.ok(done.counts.completed >= 1 && done.counts.completed < 40, `completed ${done.counts.completed}`);
    assert.equal(done.counts.completed + done.counts.cancelled, 40);
    const results = [];
    for await (const r of h.results()) results.push(r);
    assert.equal(results.length, done.counts.completed);
    assert.equal(new Set(results.map((r) => r.custom_id)).size, results.length);

    // a batch that runs to its end, with progress
    const h2 = await c.submitBatch(
      Array.from({ length: 10 }, (_, i) => ({ custom_id: `q${i}`, model: 'tiny', prompt: `q ${i}` })),
      { batchId: 'run2' },
    );
    const progress: number[] = [];
    const end = await h2.wait({ onProgress: (r) => progress.push(r.counts.completed), pollMs: 20, timeoutMs: 20_000 });
    assert.equal(end.status, 'completed');
    assert.equal(end.counts.completed, 10);
    assert.equal(progress[progress.length - 1], 10);
    assert.ok(end.completed_at! >= end.created_at);
    assert.ok(end.expires_at! > Date.now());
    assert.ok(seen.length >= 0);
  } finally {
    await w.stop();
    await c.close();
  }
});

test('with allowEviction the worker starts on a Redis that may evict keys, and warns', { skip }, async () => {
  const evicting = await startRedisServer(['--maxmemory-policy', 'allkeys-lru']);
  const lines: string[] = [];
  const logger = pino(
    { level: 'warn' },
    new Writable({
      write: (chunk, _e, cb) => {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  const w = new BatchWorker({
    redisUrl: evicting.url,
    models: [{ name: 'tiny', dir: model }],
    engine: 'noop',
    logger,
    allowEviction: true,
  });
  try {
    await w.start();
    assert.ok(
      lines.some((l) => l.includes('maxmemory-policy') && l.includes('allkeys-lru')),
      lines.join('\n'),
    );
  } finally {
    await w.stop();
    await evicting.stop();
  }
});

test('Redis down: the SDK fails fast with a typed error', { skip }, async () => {
  const port = await freePort();
  const t0 = Date.now();
  await assert.rejects(
    GenerationClient.connect({ redisUrl: `redis://127.0.0.1:${port}`, connectTimeoutMs: 2000, logger: quiet }),
    (e: unknown) => e instanceof BatchgenError && e.code === 'redis_unavailable',
  );
  assert.ok(Date.now() - t0 < 3000);
  // connected, then Redis goes away
  const r2 = await startRedisServer();
  const c = await GenerationClient.connect({ redisUrl: r2.url, models: [{ name: 'tiny', dir: model }], logger: quiet });
  await r2.stop();
  const t1 = Date.now();
  await assert.rejects(
    c.submitBatch([{ custom_id: 'a', model: 'tiny', prompt: 'x' }], { batchId: 'down' }),
    (e: unknown) => e instanceof BatchgenError && e.code === 'redis_unavailable',
  );
  assert.ok(Date.now() - t1 < 3000, `${Date.now() - t1} ms`);
  await c.close();
});

test('CLI submit: bad JSONL lines come back in the errors file with their line number and reason', { skip }, async () => {
  const input = join(tmp, 'mixed.jsonl');
  writeFileSync(
    input,
    `${[
      JSON.stringify({ custom_id: 'a', model: 'tiny', prompt: 'fine', max_new_tokens: 2 }),
      '{"custom_id": "broken", ',
      JSON.stringify({ model: 'tiny', prompt: 'no id' }),
      '',
      JSON.stringify({ custom_id: 'b', model: 'nope', prompt: 'x' }),
      JSON.stringify({ custom_id: 'a', model: 'tiny', prompt: 'again' }),
      JSON.stringify({ custom_id: 'c', method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: 'x', logprobs: 1 } }),
      JSON.stringify({ custom_id: 'd', model: 'tiny', prompt: 'x', max_tokens: 3 }),
    ].join('\n')}\n`,
  );
  const errFile = join(tmp, 'errors.jsonl');
  const r = runCli([
    'submit',
    input,
    '--model',
    `tiny=${model}`,
    '--redis',
    redis.url,
    '--prefix',
    't6',
    '--batch-id',
    'cli1',
    '--errors',
    errFile,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'cli1');
  const errs = readFileSync(errFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.deepEqual(
    errs.map((e) => [e.line, e.custom_id, e.error.code]),
    [
      [2, null, 'invalid_request'],
      [3, null, 'invalid_request'],
      [5, 'b', 'unknown_model'],
      [6, 'a', 'duplicate_custom_id'],
      [7, 'c', 'unsupported_parameter'],
      [8, 'd', 'unsupported_parameter'],
    ],
  );
  for (const e of errs) assert.ok(e.error.message.length > 5);
  const s = runCli(['status', 'cli1', '--json', '--redis', redis.url, '--prefix', 't6']);
  const o = JSON.parse(s.stdout.trim().split('\n').pop()!);
  assert.deepEqual(o.request_counts, { total: 4, completed: 0, failed: 3 });
  assert.equal(o.status, 'in_progress');
  const missing = runCli(['status', 'nope', '--redis', redis.url, '--prefix', 't6']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /not found/);
});

test('CLI plan-buckets proposes buckets and compares with powers of two', { skip }, async () => {
  const input = join(tmp, 'lengths.jsonl');
  const lines: string[] = [];
  for (let i = 0; i < 60; i++) lines.push(JSON.stringify({ custom_id: `s${i}`, model: 'tiny', prompt: 'a '.repeat(2 + (i % 6)) }));
  for (let i = 0; i < 6; i++) lines.push(JSON.stringify({ custom_id: `l${i}`, model: 'tiny', prompt: 'a '.repeat(70 + i) }));
  writeFileSync(input, lines.join('\n'));
  const r = runCli(['plan-buckets', input, '--model', model, '--max-buckets', '3', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const o = JSON.parse(r.stdout);
  assert.equal(o.prompts, 66);
  assert.ok(o.plan.buckets.length <= 3);
  assert.ok(o.plan.waste < o.pow2.waste);
  const t = runCli(['plan-buckets', input, '--model', model]);
  assert.equal(t.code, 0);
  assert.match(t.stdout, /padding waste/);
  assert.match(t.stdout, /powers of two/);
});

test('a worker holds no more keys once its variants fill the cache budget, and never evicts', { skip }, async () => {
  const { createNoopEngine } = await import('../../src/worker/engine.js');
  const noop = await createNoopEngine();
  let bytes = 0;
  const engine = {
    ...noop,
    compile: async (...a: Parameters<typeof noop.compile>) => {
      bytes += 100;
      return noop.compile(...a);
    },
    stats: () => ({ compiles: bytes / 100, retraces: 0, evictions: 0, bytes }),
  };
  const lines: string[] = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write: (chunk, _e, cb) => {
        lines.push(String(chunk));
        cb();
      },
    }),
  );
  const w = new BatchWorker({
    redisUrl: redis.url,
    prefix: 't8',
    models: [{ name: 'tiny', dir: model }],
    engine,
    logger,
    cacheBudgetBytes: 500,
    keys: ['tiny:p16:n16:greedy', 'tiny:p32:n16:greedy', 'tiny:p64:n16:greedy'],
  });
  try {
    await w.start();
    assert.deepEqual(w.stats().keys, ['tiny:p16:n16:greedy', 'tiny:p32:n16:greedy']);
    assert.equal(bytes, 800);
    assert.ok(lines.some((l) => l.includes('fill the cache budget') && l.includes('tiny:p64:n16:greedy')));
  } finally {
    await w.stop();
  }
});

test('worker metrics: Prometheus text at /metrics, including retraces and compiles', { skip }, async () => {
  const port = await freePort();
  const w = new BatchWorker({
    redisUrl: redis.url,
    prefix: 't9',
    models: [{ name: 'tiny', dir: model }],
    engine: 'noop',
    logger: quiet,
    metricsPort: port,
    keys: ['tiny:p16:n16:greedy'],
  });
  const c = await client('t9');
  try {
    await w.start();
    const h = await c.submitBatch(requests3(), { batchId: 'm' });
    await h.wait({ timeoutMs: 20_000 });
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const text = await res.text();
    const key = 'key="tiny:p16:n16:greedy"';
    assert.match(text, /# TYPE batchgen_retraces_total counter\nbatchgen_retraces_total 0\n/);
    assert.ok(text.includes(`\nbatchgen_compiles_total{${key}} 4\n`), text);
    assert.ok(text.includes(`\nbatchgen_jobs_completed_total{${key}} 3\n`), text);
    assert.match(text, new RegExp(`\nbatchgen_batch_seconds_count\\{${key}\\} [1-3]\n`));
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404);
  } finally {
    await w.stop();
    await c.close();
  }
});

function requests3() {
  return [0, 1, 2].map((i) => ({ custom_id: `m${i}`, model: 'tiny', prompt: `metrics ${i}`, max_new_tokens: 2 }));
}
