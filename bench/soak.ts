/**
 * `npm run soak` (not part of `npm test`): 20,000 no-op-engine requests, then 2,000 real ones,
 * each through two worker processes, with one worker SIGKILLed and restarted and one Redis restart
 * (SIGKILL, AOF everysec) along the way. Then it checks:
 * - the ledger: every acknowledged request has exactly one result or one error, none twice;
 * - the real workers' RSS and live tfjs tensors after warm-up (first and last points of the curve,
 *   read from their /metrics);
 * - Redis memory back to its baseline once the batches' retention has passed, listing every key left.
 *
 * Env: SOAK_NOOP (20000), SOAK_REAL (2000), SOAK_RETENTION_S (20). Prints a report, writes
 * bench/results/soak.json. Exits 1 when the ledger is not exact.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { makeModel } from '../src/compiler/make-model.js';
import { freePort, type LocalRedis, startRedisServer } from '../src/local/redis-server.js';
import { spawnWorker, type WorkerProcess } from '../src/local/worker-process.js';
import { GenerationClient } from '../src/producer/client.js';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const N_NOOP = env('SOAK_NOOP', 20_000);
const N_REAL = env('SOAK_REAL', 2_000);
const RETENTION_S = env('SOAK_RETENTION_S', 20);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quiet = pino({ level: 'silent' });

interface Ledger {
  batch: string;
  total: number;
  results: number;
  errors: number;
  /** custom_ids with more than one settlement */
  twice: number;
  /** custom_ids with none */
  missing: number;
}

/** Every request of the batch settled exactly once (one result or one error). */
async function ledger(client: GenerationClient, batchId: string, ids: string[]): Promise<Ledger> {
  const seen = new Map<string, number>();
  let results = 0;
  let errors = 0;
  for await (const s of client.batch(batchId).settled({ pollMs: 200 })) {
    seen.set(s.custom_id, (seen.get(s.custom_id) ?? 0) + 1);
    if (s.result) results += 1;
    else errors += 1;
  }
  return {
    batch: batchId,
    total: ids.length,
    results,
    errors,
    twice: [...seen.values()].filter((n) => n > 1).length,
    missing: ids.filter((id) => !seen.has(id)).length,
  };
}

/** A worker's RSS and live tfjs tensors, from its /metrics. */
async function sample(port: number): Promise<{ rss_mb: number; tensors: number } | null> {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const num = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    return { rss_mb: num('process_resident_memory_bytes') / 2 ** 20, tensors: num('batchgen_tfjs_tensors') };
  } catch {
    return null;
  }
}

async function usedMemory(redisUrl: string): Promise<{ bytes: number; keys: string[] }> {
  const r = new Redis(redisUrl);
  try {
    const info = await r.info('memory');
    const keys = await r.keys('*');
    return { bytes: Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0), keys: keys.sort() };
  } finally {
    r.disconnect();
  }
}

async function waitFor(what: string, fn: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`soak: gave up waiting for ${what}`);
    await sleep(250);
  }
}

interface Phase {
  name: string;
  ledger: Ledger;
  seconds: number;
  curve: { t_s: number; worker: string; rss_mb: number; tensors: number }[];
}

async function phase(
  redis: LocalRedis,
  model: string,
  name: 'noop' | 'real',
  n: number,
  fault: (ws: WorkerProcess[], restart: (i: number) => void) => Promise<void>,
): Promise<Phase> {
  const prefix = `soak-${name}`;
  const ports = [await freePort(), await freePort()];
  const args = (i: number) => [
    '--prefix',
    prefix,
    '--id',
    `${name}-${i + 1}`,
    '--metrics-port',
    String(ports[i]),
    '--lock-ms',
    '5000',
    '--stalled-interval-ms',
    '2000',
    ...(name === 'noop' ? ['--engine', 'noop'] : []),
  ];
  const ws: WorkerProcess[] = [0, 1].map((i) =>
    spawnWorker(redis.url, [`tiny=${model}`], args(i), { env: { BATCHGEN_LOG_LEVEL: 'warn' } }),
  );
  const restart = (i: number) => {
    ws[i] = spawnWorker(redis.url, [`tiny=${model}`], args(i), { env: { BATCHGEN_LOG_LEVEL: 'warn' } });
  };
  const client = await GenerationClient.connect({
    redisUrl: redis.url,
    prefix,
    models: [{ name: 'tiny', dir: model }],
    retentionS: RETENTION_S,
    logger: quiet,
  });
  const t0 = Date.now();
  const curve: Phase['curve'] = [];
  const sampler = setInterval(async () => {
    for (let i = 0; i < 2; i++) {
      const s = await sample(ports[i]);
      if (s && Number.isFinite(s.rss_mb)) curve.push({ t_s: (Date.now() - t0) / 1000, worker: `${name}-${i + 1}`, ...s });
    }
  }, 2000);
  try {
    const reqs = Array.from({ length: n }, (_, i) => ({
      custom_id: `${name}-${i}`,
      model: 'tiny',
      prompt: `soak request ${i} ${'and more words '.repeat(i % 6)}`,
      max_new_tokens: [4, 8, 12][i % 3],
      ...(i % 4 === 1 ? { do_sample: true, seed: i } : {}),
    }));
    const batchId = `soak-${name}-${Date.now()}`;
    const handle = await client.submitBatch(reqs, { batchId });
    await sleep(1500); // past AOF everysec: what submit acknowledged is on disk
    await fault(ws, restart);
    await handle.wait({ pollMs: 500, timeoutMs: 15 * 60_000 });
    const l = await ledger(
      client,
      batchId,
      reqs.map((r) => r.custom_id),
    );
    return { name, ledger: l, seconds: (Date.now() - t0) / 1000, curve };
  } finally {
    clearInterval(sampler);
    await client.close();
    await Promise.all(ws.map((w) => w.stop(30_000)));
  }
}

async function main(): Promise<void> {
  const tmp = mkdtempSync(join(tmpdir(), 'batchgen-soak-'));
  const redis = await startRedisServer(['--appendonly', 'yes', '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction']);
  try {
    const model = join(tmp, 'model');
    await makeModel({ out: model, layers: 2, heads: 2, embd: 64, positions: 128, seed: 3 });
    const baseline = await usedMemory(redis.url);
    // no-op engine: a worker killed outright mid-run, then started again
    const noop = await phase(redis, model, 'noop', N_NOOP, async (ws, restart) => {
      await sleep(1000);
      ws[0].signal('SIGKILL');
      await ws[0].exited;
      restart(0);
    });
    // real engine: Redis killed outright mid-run, then started again on its files
    const real = await phase(redis, model, 'real', N_REAL, async () => {
      await sleep(5000);
      await redis.signal('SIGKILL');
      await sleep(1000);
      await redis.restart();
    });
    // retention: the finished batches expire; what is left is what leaks
    await sleep((RETENTION_S + 5) * 1000);
    let after = await usedMemory(redis.url);
    await waitFor(
      'worker heartbeats to expire',
      async () => (after = await usedMemory(redis.url)).keys.every((k) => !k.includes(':worker:')),
      120_000,
    ).catch(() => {});
    const report = {
      noop,
      real,
      redis: { baseline_bytes: baseline.bytes, after_bytes: after.bytes, keys_left: after.keys } as Record<string, unknown>,
    };
    mkdirSync('bench/results', { recursive: true });
    writeFileSync('bench/results/soak.json', `${JSON.stringify(report, null, 2)}\n`);
    const line = (p: Phase) =>
      `${p.name.padEnd(5)} ${String(p.ledger.total).padStart(6)} requests: ${p.ledger.results} results, ${p.ledger.errors} errors, ` +
      `${p.ledger.twice} twice, ${p.ledger.missing} missing, ${p.seconds.toFixed(0)} s`;
    process.stdout.write(`${line(noop)}\n${line(real)}\n`);
    for (const w of ['real-1', 'real-2']) {
      const pts = real.curve.filter((c) => c.worker === w);
      // after warm-up: from 10 s into the phase (every key compiled by then)
      const first = pts.find((c) => c.t_s >= 10) ?? pts[Math.min(1, pts.length - 1)];
      const last = pts.at(-1);
      if (first && last)
        process.stdout.write(
          `${w}: RSS ${first.rss_mb.toFixed(0)} → ${last.rss_mb.toFixed(0)} MiB, tfjs tensors ${first.tensors} → ${last.tensors} (t ${first.t_s.toFixed(0)} → ${last.t_s.toFixed(0)} s, ${pts.length} samples)\n`,
        );
    }
    const perBatch = after.keys.filter((k) => k.includes(':batch:'));
    const events = after.keys.filter((k) => k.endsWith(':events'));
    const r = new Redis(redis.url);
    const eventLens = await Promise.all(events.map((k) => r.xlen(k)));
    const indexed = (await Promise.all(['soak-noop', 'soak-real'].map((p) => r.zcard(`${p}:batches`)))).reduce((a, b) => a + b, 0);
    r.disconnect();
    process.stdout.write(
      `redis used_memory: ${(baseline.bytes / 2 ** 20).toFixed(2)} MiB before, ${(after.bytes / 2 ** 20).toFixed(2)} MiB after retention\n` +
        `keys left: ${after.keys.length} (${perBatch.length} of a batch; the rest per compile key or per prefix: queue meta/id/marker/events, registry, arrival counters, the batch index)\n` +
        `BullMQ event streams: ${events.length}, ${eventLens.reduce((a, b) => a + b, 0)} entries (capped by BullMQ); batch index entries of expired batches: ${indexed}\n`,
    );
    Object.assign(report.redis, {
      per_batch_keys_left: perBatch,
      event_stream_entries: eventLens.reduce((a, b) => a + b, 0),
      batch_index_entries: indexed,
    });
    writeFileSync('bench/results/soak.json', `${JSON.stringify(report, null, 2)}\n`);
    const exact = [noop, real].every(
      (p) => p.ledger.twice === 0 && p.ledger.missing === 0 && p.ledger.results + p.ledger.errors === p.ledger.total,
    );
    process.stdout.write(`ledger ${exact ? 'exact' : 'NOT exact'}\n`);
    process.exitCode = exact ? 0 : 1;
  } finally {
    await redis.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
