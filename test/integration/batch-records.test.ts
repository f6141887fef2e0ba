/**
 * Batch records against a real redis-server: idempotency by content, finished batches, the expiry of
 * unfinished records, the input checked before any write, an interrupted submit resumed, and the
 * results file (appended as requests settle, resumed without duplicates, input order, OpenAI error lines).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, MAIN, runCli } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { ResultsFileAppender, writeResultsInOrder } from '../../src/producer/results-file.js';
import { BatchWorker } from '../../src/worker/worker.js';
import { Keyspace } from '../../src/shared/keys.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let redis: RedisServer;
let raw: Redis;
let tmp: string;
let model: string;
const quiet = pino({ level: 'silent' });

before(async () => {
  if (skip) return;
  tmp = mkdtempSync(join(tmpdir(), 'batchgen-records-'));
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  redis = await startRedisServer();
  raw = new Redis(redis.url);
});

after(async () => {
  raw?.disconnect();
  await redis?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const client = (prefix: string, chunkSize?: number) =>
  GenerationClient.connect({ redisUrl: redis.url, prefix, models: [{ name: 'tiny', dir: model }], logger: quiet, chunkSize });
const worker = (prefix: string) =>
  new BatchWorker({
    redisUrl: redis.url,
    prefix,
    models: [{ name: 'tiny', dir: model }],
    engine: 'noop',
    logger: quiet,
    registryRefreshMs: 50,
  });
const waitingIn = (prefix: string, key: string) =>
  new Queue(key.split(':').pop()!, { connection: { url: redis.url }, prefix: new Keyspace({ prefix }).queue(key).bullPrefix });
const reqs = (n: number, prompt = (i: number) => `prompt ${i}`) =>
  Array.from({ length: n }, (_, i) => ({ custom_id: `r${i}`, model: 'tiny', prompt: prompt(i), max_new_tokens: 4 }));

/** Runs the CLI without blocking this process (so that an in-process worker can serve it). */
function cli(
  args: string[],
  started?: (pid: number) => void,
  onStderr?: (all: string) => void,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    started?.(p.pid!);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => {
      stderr += d;
      onStderr?.(stderr);
    });
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const jsonl = (file: string) =>
  readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));

test('a custom_id resubmitted with other content is an idempotency_conflict; the same content is already present', { skip }, async () => {
  const c = await client('i1');
  const q = waitingIn('i1', 'tiny:p16:n16:greedy');
  try {
    const h1 = await c.submitBatch(reqs(4), { batchId: 'b' });
    assert.equal(h1.report!.enqueued, 4);
    const itemBefore = await raw.hget(new Keyspace({ prefix: 'i1' }).batch('b').items, 'r1');
    const changed = reqs(4).map((r, i) => (i === 1 ? { ...r, prompt: 'another prompt' } : r));
    const h2 = await c.submitBatch(changed, { batchId: 'b' });
    const r2 = h2.report!;
    assert.deepEqual([r2.enqueued, r2.alreadyPresent, r2.conflicts, r2.failedValidation], [0, 3, 1, 0]);
    assert.equal(r2.errors.length, 1);
    assert.equal(r2.errors[0].error.code, 'idempotency_conflict');
    assert.equal(r2.errors[0].custom_id, 'r1');
    assert.match(r2.errors[0].error.message, /"r1".*other content/);
    assert.equal(await raw.hget(new Keyspace({ prefix: 'i1' }).batch('b').items, 'r1'), itemBefore);
    const st = await h2.status();
    assert.deepEqual([st.counts.total, st.counts.failed], [4, 0]);
    assert.equal(await q.getWaitingCount(), 4);
    // a failed-validation line resubmitted unchanged is already present, not failed again
    const bad = [{ custom_id: 'x', model: 'nope', prompt: 'p' }];
    const h3 = await c.submitBatch(bad, { batchId: 'v' });
    assert.equal(h3.report!.failedValidation, 1);
    const h4 = await c.submitBatch(bad, { batchId: 'v' });
    assert.deepEqual([h4.report!.failedValidation, h4.report!.alreadyPresent], [0, 1]);
    assert.equal((await h4.status()).counts.failed, 1);
  } finally {
    await q.close();
    await c.close();
  }
});

test('a finished batch refuses new lines (batch_finished) and stays finished; its own lines again are a no-op', { skip }, async () => {
  const c = await client('i2');
  const w = worker('i2');
  try {
    await w.start();
    const h = await c.submitBatch(reqs(3), { batchId: 'done' });
    const rec = await h.wait({ timeoutMs: 20_000, pollMs: 20 });
    assert.equal(rec.status, 'completed');
    const same = await c.submitBatch(reqs(3), { batchId: 'done' });
    assert.deepEqual(
      [same.report!.enqueued, same.report!.alreadyPresent, same.report!.errors.length, same.report!.status],
      [0, 3, 0, 'completed'],
    );
    const more = await c.submitBatch([...reqs(3), { custom_id: 'new', model: 'tiny', prompt: 'late' }], { batchId: 'done' });
    assert.deepEqual([more.report!.refused, more.report!.alreadyPresent, more.report!.enqueued], [1, 3, 0]);
    assert.equal(more.report!.errors[0].error.code, 'batch_finished');
    assert.match(more.report!.errors[0].error.message, /completed.*no new requests/);
    const after = await more.status();
    assert.equal(after.status, 'completed');
    assert.equal(after.counts.total, 3);
    assert.equal(after.completed_at, rec.completed_at);
    assert.equal(await raw.hexists(new Keyspace({ prefix: 'i2' }).batch('done').items, 'new'), 0);
  } finally {
    await w.stop();
    await c.close();
  }
});

test('a validating record expires after its retention unless lines are added; in progress it is kept', { skip }, async () => {
  const c = await client('i3', 1);
  const k = new Keyspace({ prefix: 'i3' }).batch('ttl');
  try {
    async function* slow() {
      yield { custom_id: 'a', model: 'tiny', prompt: 'x' };
      while (!(await raw.exists(k.items))) await new Promise((r) => setTimeout(r, 10)); // the first chunk is written
      assert.ok((await raw.ttl(k.record)) > 0, 'a validating record has an expiry');
      assert.ok((await raw.ttl(k.items)) > 0, 'and so do its items');
      const rec = await c.store.get('ttl');
      assert.equal(rec!.status, 'validating');
      assert.ok(rec!.expires_at! > Date.now());
      yield { custom_id: 'b', model: 'tiny', prompt: 'y' };
    }
    const h = await c.submitBatch(slow(), { batchId: 'ttl', retentionS: 100 });
    assert.equal(h.report!.enqueued, 2);
    assert.equal(await raw.ttl(k.record), -1);
    assert.equal((await h.status()).expires_at, null);
  } finally {
    await c.close();
  }
});

test('cancelled requests are in the errors with code cancelled', { skip }, async () => {
  const c = await client('i4');
  try {
    const h = await c.submitBatch(reqs(3), { batchId: 'c' });
    await h.cancel();
    const errs = await h.errors();
    assert.deepEqual(
      errs.map((e) => [e.line, e.custom_id, e.error.code]),
      [
        [1, 'r0', 'cancelled'],
        [2, 'r1', 'cancelled'],
        [3, 'r2', 'cancelled'],
      ],
    );
    assert.match(errs[0].error.message, /cancelled/);
  } finally {
    await c.close();
  }
});

test('CLI submit checks its input and model before writing anything to Redis', { skip }, async () => {
  const before = await raw.dbsize();
  const missing = runCli([
    'submit',
    join(tmp, 'nope.jsonl'),
    '--model',
    `tiny=${model}`,
    '--redis',
    redis.url,
    '--prefix',
    'i5',
    '--batch-id',
    'm',
  ]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /file_not_found.*nope\.jsonl/);
  const empty = join(tmp, 'empty.jsonl');
  writeFileSync(empty, '\n  \n');
  const e = runCli(['submit', empty, '--model', `tiny=${model}`, '--redis', redis.url, '--prefix', 'i5', '--batch-id', 'm']);
  assert.equal(e.code, 1);
  assert.match(e.stderr, /empty_input.*empty/);
  const some = join(tmp, 'some.jsonl');
  writeFileSync(some, `${JSON.stringify({ custom_id: 'a', model: 'tiny', prompt: 'x' })}\n`);
  const nomodel = runCli(['submit', some, '--redis', redis.url, '--prefix', 'i5', '--batch-id', 'm'], { env: { BATCHGEN_MODELS: '' } });
  assert.equal(nomodel.code, 2);
  assert.equal(nomodel.stderr.trim().split('\n').length, 1);
  assert.match(nomodel.stderr, /no model/);
  assert.equal(await raw.dbsize(), before);
});

test('an interrupted submit resumes with the same --batch-id: every request exactly once', { skip }, async () => {
  const fifo = join(tmp, 'half.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const all = reqs(1200);
  const k = new Keyspace({ prefix: 'i6' }).batch('resume');
  let pid = 0;
  let said: () => void = () => {};
  const interrupted = new Promise<void>((r) => (said = r));
  const sub = cli(
    ['submit', fifo, '--model', `tiny=${model}`, '--redis', redis.url, '--prefix', 'i6', '--batch-id', 'resume'],
    (p) => (pid = p),
    (e) => {
      if (e.includes('resume with:')) said();
    },
  );
  const writer = createWriteStream(fifo);
  writer.write(
    `${all
      .slice(0, 1000)
      .map((r) => JSON.stringify(r))
      .join('\n')}\n`,
  );
  // two chunks of 500 are recorded; the submit then waits for more input
  while ((await raw.hlen(k.items)) < 1000) await new Promise((r) => setTimeout(r, 20));
  process.kill(pid, 'SIGINT');
  await interrupted;
  writer.destroy(); // the process exits once its pending read of the pipe returns
  const r1 = await sub;
  assert.equal(r1.code, 130, r1.stderr);
  assert.match(r1.stderr, /batchgen submit .* --batch-id resume/);
  assert.equal(await raw.hget(k.record, 'status'), 'validating');

  const full = join(tmp, 'full.jsonl');
  writeFileSync(full, `${all.map((r) => JSON.stringify(r)).join('\n')}\n`);
  const w = worker('i6');
  await w.start();
  try {
    const out = join(tmp, 'resume.out.jsonl');
    const r2 = await cli([
      'submit',
      full,
      '--model',
      `tiny=${model}`,
      '--redis',
      redis.url,
      '--prefix',
      'i6',
      '--batch-id',
      'resume',
      '--wait',
      '--out',
      out,
    ]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stderr, /1200 requests \(200 enqueued, 1000 already present\)/);
    const lines = jsonl(out);
    assert.equal(lines.length, 1200);
    assert.equal(new Set(lines.map((l) => l.custom_id)).size, 1200);
    const rec = await raw.hgetall(k.record);
    assert.deepEqual([rec.status, rec.total, rec.completed], ['completed', '1200', '1200']);
  } finally {
    await w.stop();
  }
});

test('results file: appended as requests settle, a restart writes no line twice, input order, OpenAI error lines', { skip }, async () => {
  const c = await client('i7');
  const w = worker('i7');
  try {
    await w.start();
    const lines = [
      ...reqs(6),
      { custom_id: 'o-ok', method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: 'x', max_tokens: 2, temperature: 0 } },
      { custom_id: 'o-bad', method: 'POST', url: '/v1/completions', body: { model: 'nope', prompt: 'x' } },
      { custom_id: 'n-bad', model: 'nope', prompt: 'x' },
    ];
    const h = await c.submitBatch(lines, { batchId: 'files' });
    await h.wait({ timeoutMs: 20_000, pollMs: 20 });
    const full = join(tmp, 'full.out.jsonl');
    const n = await writeResultsInOrder(full, 'files', c.store, 'completion');
    assert.equal(n, 8); // 7 results and the OpenAI error line; the native failure is only in the errors file
    const fullLines = readFileSync(full, 'utf8').trim().split('\n');
    const bad = fullLines.map((l) => JSON.parse(l)).find((l) => l.custom_id === 'o-bad');
    assert.equal(bad.response.status_code, 400);
    assert.equal(bad.response.body.error.code, 'unknown_model');
    assert.equal(bad.error.code, 'unknown_model');

    // a crash after 3 lines and half a fourth: the restart keeps them and appends the rest once
    const part = join(tmp, 'part.out.jsonl');
    writeFileSync(part, `${fullLines.slice(0, 3).join('\n')}\n${fullLines[3].slice(0, 10)}`);
    const a = await ResultsFileAppender.open(part, 'files', c.store);
    assert.equal(a.kept, 3);
    await a.catchUp();
    await a.close();
    assert.deepEqual(readFileSync(part, 'utf8'), readFileSync(full, 'utf8'));

    // a file of something else is started afresh
    const other = join(tmp, 'other.out.jsonl');
    writeFileSync(other, `${JSON.stringify({ custom_id: 'r0', text: 'not this batch' })}\n`);
    const b = await ResultsFileAppender.open(other, 'files', c.store);
    assert.equal(b.kept, 0);
    await b.catchUp();
    await b.close();
    assert.deepEqual(readFileSync(other, 'utf8'), readFileSync(full, 'utf8'));

    // input order
    const ordered = join(tmp, 'ordered.out.jsonl');
    const r = runCli(['results', 'files', '--out', ordered, '--order', 'input', '--redis', redis.url, '--prefix', 'i7']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      jsonl(ordered).map((l) => l.custom_id),
      ['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'o-ok', 'o-bad'],
    );

    const s = runCli(['status', 'files', '--json', '--redis', redis.url, '--prefix', 'i7']);
    const o = JSON.parse(s.stdout.trim());
    assert.equal(o.endpoint, '/v1/completions');
    assert.deepEqual(
      o.errors.data.map((e: { line: number; code: string }) => [e.line, e.code]),
      [
        [8, 'unknown_model'],
        [9, 'unknown_model'],
      ],
    );
    assert.equal(o.output_file_id, null);
  } finally {
    await w.stop();
    await c.close();
  }
});
