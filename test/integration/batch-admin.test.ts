/**
 * Batch management against a real redis-server: list (newest first, paged, expired entries dropped),
 * delete (every key of the batch gone, its waiting/delayed/prioritized jobs removed, other batches
 * untouched, live batches and running jobs refused), cancel progress in chunks, status --watch.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, MAIN, runCli, spawnWorker } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { BatchStore } from '../../src/shared/batch-store.js';
import { deleteDecision } from '../../src/shared/batch-admin.js';
import { jobIdOf, Keyspace } from '../../src/shared/keys.js';
import { progressWrite } from '../../src/cli/common.js';
import { watchLine } from '../../src/cli/watch.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let server: RedisServer;
let redis: Redis;
let model: string;
const keys = new Keyspace();

before(async () => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  server = await startRedisServer();
  redis = new Redis(server.url);
});
after(async () => {
  if (skip) return;
  redis.disconnect();
  await server.stop();
});

const requests = (n: number, tag = 'r') =>
  Array.from({ length: n }, (_, i) => ({ custom_id: `${tag}${i}`, model: 'tiny', prompt: `hello ${i}`, max_new_tokens: 4 }));

async function submit(batchId: string, n: number): Promise<{ client: GenerationClient; key: string }> {
  const client = await GenerationClient.connect({ redisUrl: server.url, models: [{ name: 'tiny', dir: model }] });
  const h = await client.submitBatch(requests(n), { batchId });
  assert.equal(h.report!.enqueued, n);
  return { client, key: h.report!.keys[0] };
}

function queueOf(keyId: string): Queue {
  const ref = keys.queue(keyId);
  return new Queue(ref.bullName, { connection: redis, prefix: ref.bullPrefix });
}

async function keysWith(text: string): Promise<string[]> {
  return (await redis.keys('*')).filter((k) => k.includes(text)).sort();
}

// ---- pure ----

test('deleteDecision: live batches need --force; finished or leftover ones do not', () => {
  for (const s of ['validating', 'in_progress', 'cancelling'] as const) {
    assert.equal(deleteDecision(s, false).ok, false, s);
    assert.equal(deleteDecision(s, true).ok, true, s);
  }
  for (const s of ['completed', 'cancelled', 'failed', null] as const) assert.equal(deleteDecision(s, false).ok, true, String(s));
});

test('progressWrite: rewrites in place on a terminal, one line per change otherwise, nothing when unchanged', () => {
  assert.equal(progressWrite(null, 'a', false), 'a\n');
  assert.equal(progressWrite('a', 'a', false), '');
  assert.equal(progressWrite('a', 'b', true), '\r\x1b[Kb');
  assert.equal(progressWrite('b', 'b', true), '');
});

// ---- list ----

test('list: every batch once, newest first, across pages; an expired record leaves the index', { skip }, async () => {
  const store = new BatchStore(redis, keys);
  const ids = Array.from({ length: 450 }, (_, i) => `listed-${String(i).padStart(3, '0')}`);
  for (const id of ids) {
    await store.begin(id, { input: 'x.jsonl' });
    await store.endSubmit(id); // no request: failed
  }
  await redis.del(keys.batch('listed-007').record); // as if it had expired

  const r = runCli(['list', '--json', '--redis', server.url]);
  assert.equal(r.code, 0, r.stderr);
  const list = JSON.parse(r.stdout) as {
    object: string;
    data: { id: string; status: string; created_at: number; request_counts: { total: number } }[];
  };
  assert.equal(list.object, 'list');
  const listed = list.data.map((b) => b.id).filter((id) => id.startsWith('listed-'));
  assert.equal(listed.length, 449);
  assert.equal(new Set(listed).size, 449, 'each batch once');
  assert.deepEqual(
    [...listed].sort(),
    ids.filter((id) => id !== 'listed-007'),
  );
  for (let i = 1; i < list.data.length; i++) assert.ok(list.data[i - 1].created_at >= list.data[i].created_at, 'newest first');
  assert.equal(await redis.zscore(keys.batches(), 'listed-007'), null, 'the expired entry left the index');

  const text = runCli(['list', '--limit', '3', '--redis', server.url]);
  assert.equal(text.code, 0, text.stderr);
  const lines = text.stdout.trim().split('\n');
  assert.match(lines[0], /^ID\s+STATUS\s+TOTAL\s+COMPLETED\s+FAILED\s+CANCELLED\s+CREATED$/);
  assert.equal(lines.length, 4);
  assert.match(lines[1], /^\S+\s+failed\s+0\s+0\s+0\s+0\s+\d{4}-\d\d-\d\dT/);

  // --limit counts batches that are still there, past entries whose records expired
  const newest = list.data.slice(0, 2).map((b) => b.id);
  for (const id of newest) await redis.del(keys.batch(id).record);
  const limited = JSON.parse(runCli(['list', '--json', '--limit', '3', '--redis', server.url]).stdout) as { data: { id: string }[] };
  assert.deepEqual(
    limited.data.map((b) => b.id),
    list.data.slice(2, 5).map((b) => b.id),
  );
  for (const id of ids) await store.redis.unlink(...Object.values(keys.batch(id)));
  await redis.del(keys.batches());
});

// ---- delete ----

test('delete --force: waiting, delayed and prioritized jobs and every key of the batch go; another batch stays', { skip }, async () => {
  const { client, key } = await submit('doomed', 12);
  const other = await client.submitBatch(requests(5, 'o'), { batchId: 'kept' });
  assert.equal(other.report!.keys[0], key, 'both batches share a queue');
  const q = queueOf(key);
  try {
    // one job delayed and one prioritized, as retries and priorities leave them
    for (const [cid, opts] of [
      ['r1', { delay: 3_600_000 }],
      ['r2', { priority: 3 }],
    ] as const) {
      const job = (await q.getJob(jobIdOf('doomed', cid)))!;
      assert.equal(await q.remove(job.id!), 1);
      await q.add('gen', job.data, { jobId: job.id, removeOnComplete: true, removeOnFail: true, ...opts });
    }
    assert.deepEqual(await q.getJobCounts('wait', 'delayed', 'prioritized'), { wait: 15, delayed: 1, prioritized: 1 });
    assert.ok((await keysWith('doomed')).length > 12);

    const refused = runCli(['delete', 'doomed', '--redis', server.url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /error \[batch_active\]: batch doomed: the batch is in_progress/);
    assert.ok((await keysWith('doomed')).length > 12, 'nothing deleted when refused');

    const r = runCli(['delete', 'doomed', '--force', '--redis', server.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /batch doomed deleted \(in_progress\): 12 queued job\(s\) removed/);
    assert.deepEqual(await keysWith('doomed'), [], 'no key of the batch is left');
    assert.deepEqual(
      await q.getJobCounts('wait', 'delayed', 'prioritized'),
      { wait: 5, delayed: 0, prioritized: 0 },
      'only the other batch is queued',
    );
    assert.equal((await other.status()).counts.total, 5, 'the other batch is untouched');
    const list = JSON.parse(runCli(['list', '--json', '--redis', server.url]).stdout) as { data: { id: string }[] };
    assert.deepEqual(
      list.data.map((b) => b.id),
      ['kept'],
    );

    const again = runCli(['delete', 'doomed', '--redis', server.url]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /error \[not_found\]/);
  } finally {
    await q.obliterate({ force: true });
    await q.close();
    await client.close();
    await redis.flushall();
  }
});

test('delete: a running job is refused without --force; with --force its keys go once it finishes', { skip }, async () => {
  const { client, key } = await submit('busy', 4);
  const ref = keys.queue(key);
  const conn = new Redis(server.url, { maxRetriesPerRequest: null });
  const taker = new Worker(ref.bullName, null, { connection: conn, prefix: ref.bullPrefix, autorun: false, lockDuration: 600_000 });
  try {
    const active = (await taker.getNextJob('tok'))!; // locked, as a worker holds it
    assert.ok(active.id!.startsWith('busy/'));
    const c = runCli(['cancel', 'busy', '--redis', server.url]);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, /busy: cancelling \(3 cancelled, 0 completed, 0 failed, 1 still running\)/);

    const refused = runCli(['delete', 'busy', '--redis', server.url]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /error \[batch_active\].*cancelling/);

    const r = runCli(['delete', 'busy', '--force', '--redis', server.url]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: 1 request\(s\) were running on a worker/);
    assert.deepEqual(await client.store.get('busy'), null, 'the record is gone');
    assert.ok(
      (await keysWith('busy')).every((k) => k.includes(active.id!)),
      'only the running job is left',
    );

    await active.moveToCompleted('done', 'tok', false); // the worker finishes it (removeOnComplete)
    assert.deepEqual(await keysWith('busy'), [], 'no key of the batch is left');
  } finally {
    await taker.close(true);
    conn.disconnect();
    await client.close();
    await redis.flushall();
  }
});

// ---- cancel progress ----

test('cancel of a large batch removes its waiting jobs in chunks and shows progress', { skip }, async () => {
  const { client, key } = await submit('big', 1500);
  const q = queueOf(key);
  try {
    const r = runCli(['cancel', 'big', '--redis', server.url]);
    assert.equal(r.code, 0, r.stderr);
    const steps = [...r.stderr.matchAll(/cancelling big: \[[#.]+\] (\d+)\/1500 requests looked at, (\d+) waiting job\(s\) removed/g)].map(
      (m) => [Number(m[1]), Number(m[2])],
    );
    assert.ok(steps.length >= 2, `progress in several chunks:\n${r.stderr}`);
    for (let i = 1; i < steps.length; i++)
      assert.ok(steps[i][0] > steps[i - 1][0] && steps[i][1] >= steps[i - 1][1], 'progress only goes forward');
    assert.deepEqual(steps.at(-1), [1500, 1500]);
    assert.match(r.stdout, /batch big: cancelled \(1500 cancelled/);
    assert.equal((await q.getJobCounts('wait')).wait, 0);
  } finally {
    await q.close();
    await client.close();
    await redis.flushall();
  }
});

// ---- status --watch ----

test('watchLine: status, bar and counts of a record', () => {
  const line = watchLine({
    id: 'b',
    status: 'in_progress',
    counts: { total: 4, completed: 1, failed: 1, cancelled: 0, rejected: 0 },
  } as Parameters<typeof watchLine>[0]);
  assert.match(line, /^batch b: in_progress \[#+\.+\] 2\/4 \(1 completed, 1 failed, 0 cancelled\)$/);
});

test('status --watch without a terminal: one line per change until the batch is finished, then the status', { skip }, async () => {
  const { client } = await submit('watched', 6);
  const watch = spawn(process.execPath, [MAIN, 'status', 'watched', '--watch', '--redis', server.url], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  watch.stderr!.on('data', (d) => (stderr += d));
  const firstLine = new Promise<void>((res) =>
    watch.stdout!.on('data', (d) => {
      stdout += d;
      if (stdout.includes('\n')) res();
    }),
  );
  const exited = new Promise<number | null>((res) => watch.once('exit', (code) => res(code)));
  await firstLine; // the watch has seen the batch waiting; a worker now runs it
  const worker = spawnWorker(server.url, [`tiny=${model}`], ['--engine', 'noop']);
  try {
    assert.equal(await exited, 0, stderr);
    const lines = stdout.trim().split('\n');
    const watchLines = lines.filter((l) => /^batch watched: \w+ \[/.test(l));
    assert.match(watchLines[0], /in_progress \[\.+\] 0\/6/);
    assert.match(watchLines.at(-1)!, /completed \[#+\] 6\/6 \(6 completed/);
    for (let i = 1; i < watchLines.length; i++) assert.notEqual(watchLines[i], watchLines[i - 1], 'a line only when something changed');
    assert.ok(!stdout.includes('\r'), 'no terminal control without a terminal');
    assert.match(lines[watchLines.length], /^batch watched: completed$/, 'then the full status');
  } finally {
    await worker.stop();
    await client.close();
    await redis.flushall();
  }
});
