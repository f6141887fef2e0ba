/**
 * Limits on untrusted input and payload integrity, with a real redis-server and a real worker: the
 * producer turns each line over a limit into one error line (a 1 MB prompt, a line over
 * maxLineBytes) while the rest completes; job hashes edited in Redis (another model, another key, a
 * path, a body that is not JSON, a value over a limit) fail that job only, once, with its reason.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, runCli, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { Keyspace } from '../../src/shared/keys.js';
import { LIMITS } from '../../src/shared/limits.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
const quiet = pino({ level: 'silent' });
let redis: RedisServer;
let model: string;
let tmp: string;
const workers: WorkerProcess[] = [];

before(async () => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  tmp = mkdtempSync(join(tmpdir(), 'batchgen-limits-'));
  redis = await startRedisServer(['--maxmemory-policy', 'noeviction']);
});

after(async () => {
  for (const w of workers) await w.stop(5000);
  await redis?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function worker(prefix: string): WorkerProcess {
  const w = spawnWorker(redis.url, [`tiny=${model}`], ['--prefix', prefix, '--id', `${prefix}-worker`]);
  workers.push(w);
  return w;
}

const req = (custom_id: string, extra: Record<string, unknown> = {}) => ({
  custom_id,
  model: 'tiny',
  prompt: `request ${custom_id}`,
  max_new_tokens: 4,
  ...extra,
});

/** Every acknowledged request has exactly one result or one error, none twice, and nothing else is settled. */
async function ledger(c: GenerationClient, batchId: string, ids: string[]): Promise<{ results: string[]; errors: string[] }> {
  const results: string[] = [];
  for await (const chunk of c.store.results(batchId)) results.push(...chunk.map((r) => r.custom_id));
  const errors = (await c.store.errors(batchId)).flatMap((e) => (e.custom_id === null ? [] : [e.custom_id]));
  assert.deepEqual([...results, ...errors].sort(), [...ids].sort(), `batch ${batchId}: one result or one error per request`);
  return { results, errors };
}

test('lines over the limits are one error line each (a 1 MB prompt, a 2 MB line); the other lines complete', {
  skip,
  timeout: 120_000,
}, async () => {
  const w = worker('lim');
  const lines = [
    JSON.stringify(req('ok0')),
    JSON.stringify(req('big-prompt', { prompt: 'a'.repeat(1_000_000) })),
    JSON.stringify(req('ok1')),
    // two megabytes on one line: read past, never parsed
    JSON.stringify(req('huge-line', { prompt: 'b'.repeat(2 * 1024 * 1024) })),
    JSON.stringify(req('stops', { stop_strings: ['a', 'b', 'c', 'd', 'e'] })),
    JSON.stringify(req('x'.repeat(LIMITS.maxCustomIdChars + 1))),
    JSON.stringify(req('new-tokens', { max_new_tokens: LIMITS.maxNewTokens + 1 })),
    JSON.stringify({
      custom_id: 'oa-stop',
      method: 'POST',
      url: '/v1/completions',
      body: { model: 'tiny', prompt: 'hi', stop: ['x'.repeat(LIMITS.maxStopStringChars + 1)] },
    }),
    JSON.stringify(req('ok2')),
  ];
  const file = join(tmp, 'limits.jsonl');
  writeFileSync(file, `${lines.join('\n')}\n`);
  const out = join(tmp, 'limits.results.jsonl');
  const errFile = join(tmp, 'limits.errors.jsonl');
  const r = runCli(
    ['submit', file, '--model', `tiny=${model}`, '--prefix', 'lim', '--wait', '--timeout', '60', '--out', out, '--errors', errFile],
    {
      env: { REDIS_URL: redis.url },
    },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /7 requests \(3 enqueued, 4 failed validation\).*2 line\(s\) rejected/);
  const errs = readFileSync(errFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { line: number; custom_id: string | null; error: { code: string; message: string } });
  const byLine = new Map(errs.map((e) => [e.line, e]));
  assert.equal(errs.length, 6, 'one error line per line over a limit');
  const expect: [number, string | null, RegExp][] = [
    [2, 'big-prompt', /prompt: 1000000 bytes, above the limit of 262144 \(maxPromptBytes\)/],
    [4, null, /line 4: the line is \d+ bytes, above the limit of 1048576 \(maxLineBytes\); it was not read/],
    [5, 'stops', /maxStopStrings/],
    [6, null, /custom_id is 257 characters, above the limit of 256 \(maxCustomIdChars\)/],
    [7, 'new-tokens', /max_new_tokens: at most 8192 \(the maxNewTokens limit\)/],
    [8, 'oa-stop', /stop/],
  ];
  for (const [line, cid, re] of expect) {
    const e = byLine.get(line);
    assert.ok(e, `an error for line ${line}`);
    assert.equal(e.custom_id, cid);
    assert.match(e.error.message, re, `line ${line}`);
    assert.ok(e.error.message.length < 500, `line ${line}: the message does not carry the input`);
  }
  // the output has a line per completed request (and OpenAI's form also one per failed OpenAI line)
  const results = readFileSync(out, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { custom_id: string; error?: unknown })
    .filter((l) => !l.error)
    .map((l) => l.custom_id);
  assert.deepEqual(results.sort(), ['ok0', 'ok1', 'ok2']);
  const c = await GenerationClient.connect({ redisUrl: redis.url, prefix: 'lim', logger: quiet });
  try {
    const batchId = r.stdout.trim();
    const rec = await c.batch(batchId).status();
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', 3, 4]);
    await ledger(c, batchId, ['ok0', 'ok1', 'ok2', 'big-prompt', 'stops', 'new-tokens', 'oa-stop']);
  } finally {
    await c.close();
  }
  assert.ok(w.running, 'the worker is still up');
});

test('job hashes edited in Redis fail that job only, once, with its reason; the rest of the batch completes', {
  skip,
  timeout: 120_000,
}, async () => {
  const c = await GenerationClient.connect({ redisUrl: redis.url, prefix: 'edit', models: [{ name: 'tiny', dir: model }], logger: quiet });
  const raw = new Redis(redis.url);
  try {
    const ids = Array.from({ length: 9 }, (_, i) => `e${i}`);
    const h = await c.submitBatch(
      ids.map((id) => req(id)),
      { batchId: 'edited' },
    );
    assert.equal(h.report!.enqueued, 9);
    const ref = new Keyspace({ prefix: 'edit' }).queue('tiny:p16:n16:greedy');
    const hash = (id: string) => `${ref.name}:edited/${id}`;
    const data = async (id: string) => JSON.parse((await raw.hget(hash(id), 'data'))!) as Record<string, unknown>;
    const edit = async (id: string, change: (d: Record<string, unknown>) => unknown) => {
      const d = await data(id);
      await raw.hset(hash(id), 'data', typeof change(d) === 'string' ? (change(d) as string) : JSON.stringify(change(d)));
    };
    // before any worker runs: the jobs are waiting, recorded in the batch
    await edit('e1', (d) => ({ ...d, model: 'other' }));
    await edit('e2', (d) => ({ ...d, key: 'tiny:p32:n16:greedy' }));
    await edit('e3', (d) => ({ ...d, model: '../../../../etc/passwd' }));
    await edit('e4', () => '{"v": 1, "batch_id": "edited", "custom_id": ');
    await edit('e5', (d) => ({ ...d, params: { ...(d.params as object), stop_strings: ['a', 'b', 'c', 'd', 'e'] } }));
    await edit('e6', (d) => ({ ...d, prompt_ids: new Array(LIMITS.maxPromptTokens + 1).fill(1) }));
    const reasons: Record<string, RegExp> = {
      e1: /payload model "other" is not the model of its queue/,
      e2: /payload key tiny:p32:n16:greedy is not the key of its queue/,
      e3: /model/,
      e4: /job data is not JSON/,
      e5: /maxStopStrings/,
      e6: /maxPromptTokens/,
    };
    const w = worker('edit');
    const rec = await h.wait({ timeoutMs: 60_000 });
    assert.deepEqual([rec.status, rec.counts.completed, rec.counts.failed], ['completed', 3, 6]);
    const { results, errors } = await ledger(c, 'edited', ids);
    assert.deepEqual(results.sort(), ['e0', 'e7', 'e8']);
    const errs = await h.errors();
    for (const [id, re] of Object.entries(reasons)) {
      const e = errs.filter((x) => x.custom_id === id);
      assert.equal(e.length, 1, `${id}: one error`);
      assert.equal(e[0].error.code, 'invalid_payload', id);
      assert.match(e[0].error.message, re, `${id}: ${e[0].error.message}`);
      // the job was taken once and failed for good (its hash is removed on failure): no retry
      const seen = w.logs.filter((l) => l.job === `edited/${id}`);
      assert.deepEqual(
        seen.map((l) => l.msg),
        ['invalid payload: failed without retry'],
        `${id} was failed once, not retried`,
      );
    }
    assert.equal(errors.length, 6);
    assert.equal(w.logs.filter((l) => l.msg === 'invalid payload: failed without retry').length, 6);
    assert.ok(!w.stderr.some((l) => /ENOENT|EACCES|passwd:/.test(l)), 'nothing in a payload was used as a path');
    assert.ok(w.running);
  } finally {
    raw.disconnect();
    await c.close();
  }
});
