/**
 * Redis faults, with a real redis-server and real worker processes: Redis killed (SIGKILL) and
 * restarted from its append-only file during a batch, Redis frozen (SIGSTOP) and its connections cut,
 * SIGTERM of a worker whose Redis is down or frozen, a Redis out of memory, and every command
 * against a Redis that is not there. Each test ends with the same ledger check (test/helpers/ledger.ts).
 */
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
function startCli(args: string[]): { stdout: string; stderr: string; exited: Promise<number | null> } {
  const proc = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { stdout: '', stderr: '', exited: new Promise<number | null>((r) => proc.once('exit', (code) => r(code))) };
  proc.stdout.on('data', (d) => {
    run.stdout += d;
  });
  proc.stderr.on('data', (d) => {
    run.stderr += d;
  });
  return run;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(100);
  }
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
