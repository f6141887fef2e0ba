/**
 * Redis faults, with a real redis-server and real worker processes: Redis killed (SIGKILL) and
 * restarted from its append-only file during a batch, Redis frozen (SIGSTOP) and its connections cut,
 * SIGTERM of a worker whose Redis is down or frozen, a Redis out of memory, and every command
 * against a Redis that is not there. Each test ends with the same ledger check (test/helpers/ledger.ts).
 */
import { until } from '../helpers/until.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { freePort, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, MAIN, runCli, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { checkLedger } from '../helpers/ledger.js';
import { GenerationClient } from '../../src/producer/client.js';
import { Keyspace } from '../../src/shared/keys.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let model: string;
let work: string;
const servers: RedisServer[] = [];
const workers: WorkerProcess[] = [];
const quiet = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const LOST = 'Redis connection lost: retrying until it is back (logged once per outage)';

before(() => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  work = mkdtempSync(join(tmpdir(), 'batchgen-redis-faults-'));
});

after(async () => {
  for (const w of workers) await w.stop(3000);
  for (const s of servers) await s.stop();
});

async function redisServer(extra: string[] = []): Promise<RedisServer> {
  const s = await startRedisServer(extra);
  servers.push(s);
  return s;
}

function worker(url: string, prefix: string, extra: string[] = [], faults?: object): WorkerProcess {
  const w = spawnWorker(
    url,
    [`tiny=${model}`],
    ['--prefix', prefix, '--engine', 'noop', '--batch-sizes', '1,2,4', ...extra],
    faults ? { BATCHGEN_FAULTS: JSON.stringify(faults) } : {},
  );
  workers.push(w);
  return w;
}

function requestLines(n: number, prefix: string, maxNew = 6): { file: string; ids: string[] } {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
  const file = join(work, `${prefix}.jsonl`);
  writeFileSync(
    file,
    ids.map((id, i) => JSON.stringify({ custom_id: id, model: 'tiny', prompt: `request ${i}`, max_new_tokens: maxNew })).join('\n'),
  );
  return { file, ids };
}

/** A CLI run in the background: its output as it comes, and its end. */
function startCli(args: string[]): { stdout: string; stderr: string; exited: Promise<number | null>; kill: () => void } {
  const proc = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const run = {
    stdout: '',
    stderr: '',
    exited: new Promise<number | null>((r) => proc.once('exit', (code) => r(code))),
    kill: () => proc.kill('SIGKILL'),
  };
  proc.stdout.on('data', (d) => {
    run.stdout += d;
  });
  proc.stderr.on('data', (d) => {
    run.stderr += d;
  });
  return run;
}

/** A CLI run to its end without blocking this process (worker processes' logs keep being read meanwhile). */
async function cli(args: string[], timeoutMs = 90_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const run = startCli(args);
  const timer = setTimeout(() => run.kill(), timeoutMs);
  const code = await run.exited;
  clearTimeout(timer);
  return { code, stdout: run.stdout, stderr: run.stderr };
}

const count = (w: WorkerProcess, msg: string) => w.logs.filter((l) => l.msg === msg).length;

async function healthz(port: number): Promise<{ status: number; body: string }> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2000) });
    return { status: r.status, body: await r.text() };
  } catch (e) {
    return { status: 0, body: (e as Error).message };
  }
}

test('Redis killed with SIGKILL and restarted (appendonly, everysec) during a batch: submit --wait rides it out, nothing acknowledged is lost, nothing twice', {
  skip,
  timeout: 120_000,
}, async () => {
  const r = await redisServer(['--appendonly', 'yes', '--appendfsync', 'everysec']);
  const locks = ['--lock-ms', '3000', '--stalled-interval-ms', '1000'];
  const ws = [
    worker(r.url, 'crash', [...locks, '--id', 'c1'], { runDelayMs: 300 }),
    worker(r.url, 'crash', [...locks, '--id', 'c2'], { runDelayMs: 300 }),
  ];
  const { file, ids } = requestLines(60, 'crash');
  const out = join(work, 'crash.results.jsonl');
  const errors = join(work, 'crash.errors.jsonl');
  const sub = startCli([
    'submit',
    file,
    '--model',
    `tiny=${model}`,
    '--redis',
    r.url,
    '--prefix',
    'crash',
    '--batch-id',
    'crash',
    '--wait',
    '--out',
    out,
    '--errors',
    errors,
  ]);
  // acknowledged: submit printed the id once every request was recorded and enqueued
  await until('submit acknowledges the batch', () => sub.stdout.includes('crash\n'), 30_000).catch((e) =>
    assert.fail(`${e.message}: ${sub.stderr}`),
  );
  await sleep(1500); // appendfsync everysec: what was written more than a second ago is on disk
  const before = (await checkPartial(r.url)).results;
  await r.signal('SIGKILL');
  await sleep(1500);
  await r.restart();
  const t0 = Date.now();
  const code = await sub.exited;
  assert.equal(code, 0, `submit --wait completes across the restart:\n${sub.stderr}`);
  assert.ok(Date.now() - t0 < 60_000, 'in bounded time');
  assert.equal((sub.stderr.match(/is unavailable/g) ?? []).length, 1, `the outage is told once:\n${sub.stderr}`);
  assert.equal((sub.stderr.match(/is back after/g) ?? []).length, 1, 'and its end once');
  assert.ok(before < ids.length, 'the kill came while the batch ran');
  const ledger = await checkLedger({ redisUrl: r.url, prefix: 'crash', batchId: 'crash', acknowledged: ids, resultsFile: out });
  assert.equal(ledger.results, ids.length);
  for (const w of ws) {
    assert.ok(w.running, 'the workers reconnected by themselves');
    assert.equal(count(w, LOST), 1, 'each worker logs the outage once');
    assert.equal(count(w, 'Redis connection back'), 1, 'and its end once');
    const warnings = w.logs.filter((l) => (l.level ?? 0) >= 40).length;
    assert.ok(warnings <= 10, `a handful of warnings, not one per queue per reconnection (${warnings})`);
  }
  async function checkPartial(url: string) {
    const c = new Redis(url);
    try {
      return { results: await c.hlen(new Keyspace({ prefix: 'crash' }).batch('crash').results) };
    } finally {
      c.disconnect();
    }
  }
});

test('Redis frozen 15 s (SIGSTOP) and its connections cut (CLIENT KILL): workers resume without a restart, /healthz says so meanwhile, nothing lost or twice', {
  skip,
  timeout: 120_000,
}, async () => {
  const r = await redisServer();
  const port = await freePort();
  const locks = ['--lock-ms', '6000', '--stalled-interval-ms', '1000', '--watchdog-s', '3'];
  const a = worker(r.url, 'freeze', [...locks, '--id', 'f1', '--metrics-port', String(port)], { runDelayMs: 400 });
  const b = worker(r.url, 'freeze', [...locks, '--id', 'f2'], { runDelayMs: 400 });
  const c = await GenerationClient.connect({ redisUrl: r.url, prefix: 'freeze', models: [{ name: 'tiny', dir: model }], logger: quiet });
  const admin = new Redis(r.url);
  try {
    const ids = Array.from({ length: 80 }, (_, i) => `f${i}`);
    const h = await c.submitBatch(
      ids.map((id) => ({ custom_id: id, model: 'tiny', prompt: `request ${id}`, max_new_tokens: 6 })),
      { batchId: 'freeze' },
    );
    await a.waitForMsg('batch started');
    assert.equal((await healthz(port)).status, 200, 'healthy before the freeze');
    const killed = Number(await admin.call('CLIENT', 'KILL', 'TYPE', 'normal'));
    assert.ok(killed >= 2, `connections were cut (${killed})`);
    await sleep(500);
    await r.signal('SIGSTOP');
    const frozenAt = Date.now();
    // the watchdog notices within its bound (3 s) plus a ping interval; the loop alone would say ok
    let unhealthy: { status: number; body: string } = { status: 0, body: '' };
    await until(
      '/healthz answers 503 while Redis is frozen',
      async () => {
        unhealthy = await healthz(port);
        // (a loop that stopped fetching can be reported first; Redis's silence follows within the bound)
        return unhealthy.status === 503 && unhealthy.body.includes('redis_not_answering');
      },
      10_000,
    );
    assert.match(unhealthy.body, /redis_not_answering/);
    await sleep(Math.max(0, 15_000 - (Date.now() - frozenAt)));
    await r.signal('SIGCONT');
    const rec = await h.wait({ timeoutMs: 60_000 });
    assert.equal(rec.status, 'completed');
    await until('/healthz is ok again', async () => (await healthz(port)).status === 200, 10_000);
    assert.ok(a.running && b.running, 'both workers resumed without a restart');
    const ledger = await checkLedger({ redisUrl: r.url, prefix: 'freeze', batchId: 'freeze', acknowledged: ids });
    assert.equal(ledger.results, ids.length);
  } finally {
    admin.disconnect();
    await c.close();
  }
});

test('SIGTERM with Redis down (idle) or frozen (a batch in hand): the worker exits within --shutdown-timeout-s, logs what it left, and its jobs come back', {
  skip,
  timeout: 120_000,
}, async () => {
  // Redis down, worker idle: one outage line, then a bounded, clean exit
  const r1 = await redisServer();
  const idle = worker(r1.url, 'down', ['--shutdown-timeout-s', '5']);
  await idle.waitForMsg('warm: taking jobs');
  await r1.signal('SIGKILL');
  await sleep(3000);
  const t0 = Date.now();
  idle.signal('SIGTERM');
  const e1 = await idle.exited;
  assert.ok(Date.now() - t0 < 5000 + 5000, `exits within the shutdown timeout + 5 s (${Date.now() - t0} ms)`);
  assert.equal(e1.code, 0, 'an orderly stop');
  assert.equal(count(idle, LOST), 1, 'the outage is logged once');
  assert.ok(idle.stderr.length < 40, `no flood of connection warnings (${idle.stderr.length} lines)`);

  // Redis frozen with a batch in hand: the jobs are left, logged, and served by another worker later
  const r2 = await redisServer();
  const locks = ['--lock-ms', '3000', '--stalled-interval-ms', '1000'];
  const victim = worker(r2.url, 'stuck', [...locks, '--shutdown-timeout-s', '6', '--id', 'victim'], { runDelayMs: 2000 });
  const c = await GenerationClient.connect({ redisUrl: r2.url, prefix: 'stuck', models: [{ name: 'tiny', dir: model }], logger: quiet });
  try {
    const ids = Array.from({ length: 6 }, (_, i) => `s${i}`);
    const h = await c.submitBatch(
      ids.map((id) => ({ custom_id: id, model: 'tiny', prompt: `request ${id}`, max_new_tokens: 6 })),
      { batchId: 'stuck' },
    );
    const started = await victim.waitForMsg('batch started');
    await r2.signal('SIGSTOP');
    const t1 = Date.now();
    victim.signal('SIGTERM');
    await victim.exited;
    assert.ok(Date.now() - t1 < 6000 + 5000, `exits within the shutdown timeout + 5 s (${Date.now() - t1} ms)`);
    const left = victim.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('stop: could not finish the batch in hand'));
    assert.ok(left, 'it logs what it could not finish');
    assert.deepEqual([...(left.jobs as string[])].sort(), [...(started.jobs as string[])].sort(), 'naming the jobs in hand');
    await r2.signal('SIGCONT');
    worker(r2.url, 'stuck', [...locks, '--id', 'rescuer']);
    const rec = await h.wait({ timeoutMs: 60_000 });
    assert.equal(rec.status, 'completed', 'stall recovery gave the jobs to another worker');
    await checkLedger({ redisUrl: r2.url, prefix: 'stuck', batchId: 'stuck', acknowledged: ids });
  } finally {
    await c.close();
  }

  // a second signal exits at once, whatever the first one is waiting for
  const r3 = await redisServer();
  const twice = worker(r3.url, 'twice', []);
  await twice.waitForMsg('warm: taking jobs');
  await r3.signal('SIGSTOP');
  twice.signal('SIGTERM');
  await sleep(500);
  const t2 = Date.now();
  twice.signal('SIGINT');
  const e3 = await twice.exited;
  assert.ok(Date.now() - t2 < 3000, `the second signal exits at once (${Date.now() - t2} ms)`);
  assert.equal(e3.code, 1);
  await r3.signal('SIGCONT');
});

test('Redis out of memory (noeviction): submit says how far it got, cancel works, workers keep running and say so, a resubmission completes the rest once; an evicting policy is refused', {
  skip,
  timeout: 150_000,
}, async () => {
  const r = await redisServer(['--maxmemory-policy', 'noeviction']);
  const admin = new Redis(r.url);
  const port = await freePort();
  try {
    // an evicting policy is refused at start, unless --allow-eviction
    await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
    const refused = worker(r.url, 'oom', []);
    const e0 = await refused.exited;
    assert.notEqual(e0.code, 0);
    assert.match(refused.stderr.join('\n'), /invalid_config.*maxmemory-policy is "allkeys-lru"/);
    const allowed = worker(r.url, 'oom', ['--allow-eviction']);
    await allowed.waitForMsg('warm: taking jobs');
    await allowed.stop();
    await admin.config('SET', 'maxmemory-policy', 'noeviction');

    // a batch no worker serves (its key is not held), to cancel under OOM
    const w = worker(r.url, 'oom', ['--keys', 'tiny:p16:n16:greedy', '--metrics-port', String(port)]);
    await w.waitForMsg('warm: taking jobs');
    const other = requestLines(1000, 'c', 30);
    const sc = await cli(['submit', other.file, '--model', `tiny=${model}`, '--redis', r.url, '--prefix', 'oom', '--batch-id', 'tocancel']);
    assert.equal(sc.code, 0, sc.stderr);

    // Redis is nearly full: the submission stops part way
    const used = Number(/used_memory:(\d+)/.exec(await admin.info('memory'))![1]);
    await admin.config('SET', 'maxmemory', String(used + 600_000));
    const big = requestLines(3000, 'm', 10);
    const s1 = await cli(['submit', big.file, '--model', `tiny=${model}`, '--redis', r.url, '--prefix', 'oom', '--batch-id', 'big']);
    assert.equal(s1.code, 1);
    assert.match(s1.stderr, /error \[redis_out_of_memory\]/);
    const m = /stopped after (\d+) of the (\d+) requests read so far were recorded in it and (\d+) enqueued/.exec(s1.stderr);
    assert.ok(m, s1.stderr);
    const [recorded, read, enqueued] = [Number(m[1]), Number(m[2]), Number(m[3])];
    assert.ok(recorded > 0 && recorded < big.ids.length && enqueued <= recorded && read <= big.ids.length, s1.stderr);
    const k = new Keyspace({ prefix: 'oom' }).batch('big');
    assert.equal(await admin.hlen(k.items), recorded, 'the batch record holds the requests it reported recorded');
    assert.equal(await admin.hget(k.record, 'status'), 'validating');

    // the worker runs into OOM replies: it keeps running and says so, once, and in /healthz
    await w.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('Redis is out of memory'), 30_000);
    await until('/healthz says redis_out_of_memory', async () => (await healthz(port)).body.includes('redis_out_of_memory'), 15_000);

    // cancel still works under OOM (removing jobs frees memory)
    const cx = await cli(['cancel', 'tocancel', '--redis', r.url, '--prefix', 'oom']);
    assert.equal(cx.code, 0, cx.stderr);
    assert.equal(await admin.hget(new Keyspace({ prefix: 'oom' }).batch('tocancel').record, 'status'), 'cancelled');

    // more memory: the same submission again completes the rest, exactly once
    await admin.config('SET', 'maxmemory', '0');
    const out = join(work, 'big.results.jsonl');
    const s2 = await cli([
      'submit',
      big.file,
      '--model',
      `tiny=${model}`,
      '--redis',
      r.url,
      '--prefix',
      'oom',
      '--batch-id',
      'big',
      '--wait',
      '--out',
      out,
    ]);
    assert.equal(s2.code, 0, s2.stderr);
    assert.ok(w.running, 'the worker never exited');
    assert.equal(w.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Redis is out of memory')).length, 1, 'logged once');
    assert.ok(w.logs.some((l) => l.msg === 'Redis accepts writes again'));
    const ledger = await checkLedger({ redisUrl: r.url, prefix: 'oom', batchId: 'big', acknowledged: big.ids, resultsFile: out });
    assert.equal(ledger.results, big.ids.length);
  } finally {
    admin.disconnect();
  }
});

test('Redis down at start: every command fails fast with redis_unavailable, naming the URL it tried (password redacted)', {
  skip,
  timeout: 120_000,
}, async () => {
  const port = await freePort(); // nothing listens there
  const url = `redis://someone:hunter2@127.0.0.1:${port}`;
  const { file } = requestLines(2, 'down');
  const commands: string[][] = [
    ['worker', '--model', `tiny=${model}`, '--engine', 'noop'],
    ['submit', file, '--model', `tiny=${model}`],
    ['status', 'b1'],
    ['results', 'b1', '--out', join(work, 'down.jsonl')],
    ['cancel', 'b1'],
    ['list'],
    ['delete', 'b1'],
  ];
  for (const args of commands) {
    const t0 = Date.now();
    const res = runCli([...args, '--redis', url], { timeoutMs: 30_000 });
    const ms = Date.now() - t0;
    assert.notEqual(res.code, 0, `${args[0]} exits non-zero`);
    assert.match(res.stderr, /\[redis_unavailable\]/, `${args[0]}: ${res.stderr}`);
    assert.ok(res.stderr.includes(`redis://someone:***@127.0.0.1:${port}`), `${args[0]} names the URL: ${res.stderr}`);
    assert.ok(!res.stderr.includes('hunter2'), `${args[0]} redacts the password`);
    assert.ok(ms < 15_000, `${args[0]} fails fast (${ms} ms)`);
  }
});
