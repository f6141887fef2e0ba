/**
 * `npm run bench:autoscale:live`: the shape of bench:autoscale's trace (quiet, a 10× burst, quiet;
 * Zipf key popularity), shortened, run live on this machine: a private redis-server, the
 * autoscaler in-process with the local driver (real `batchgen worker --assigned` processes, at
 * most 2), and a producer that submits each request at its arrival time. Beside it, the
 * simulator's prediction for the same trace with the policy, from engine numbers measured at the
 * start on the same model (unscaled) and a measured worker start time.
 *
 * Measured: each request's queue wait (the worker stores `queued_ms`, from the job's enqueue to the
 * start of the batch that ran it, in the result record), worker-seconds (each worker process from
 * spawn to exit, from the driver), key compiles (the workers' heartbeats) and peak workers (plans).
 *
 * Env: BENCH_SEED (1), BENCH_LIVE_PEAK (load of the burst in workers at B=8, 1.2),
 * BENCH_LIVE_QUIET_S (60), BENCH_LIVE_BURST_S (40), BENCH_LIVE_INTERVAL_S (1),
 * BENCH_LIVE_DRAIN_S (longest wait for the workers to stop after the last result, 60).
 * Prints a table, writes bench/results/autoscale-live.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Autoscaler } from '../src/autoscaler/autoscaler.js';
import { LocalDriver } from '../src/autoscaler/drivers/local.js';
import type { PolicySettings } from '../src/autoscaler/types.js';
import { initBackend, loadModel, makeModel } from '../src/compiler/index.js';
import { startRedisServer } from '../src/local/redis-server.js';
import { WorkerProcess } from '../src/local/worker-process.js';
import type { BatchHandle } from '../src/producer/batch-handle.js';
import { GenerationClient } from '../src/producer/client.js';
import { readHeartbeats } from '../src/shared/heartbeats.js';
import { Keyspace } from '../src/shared/keys.js';
import type { ResultRecord } from '../src/shared/schemas.js';
import { policyController } from './autoscale/controllers.js';
import {
  type HeartbeatCounts,
  keyCompiles,
  peakConcurrent,
  phaseOf,
  ratio,
  waitQuantiles,
  waitsOf,
  workerSeconds,
} from './autoscale/live-stats.js';
import { measureShapes } from './autoscale/measure.js';
import { type SimKey, simulate } from './autoscale/simulator.js';
import { poissonTrace, zipfWeights } from './autoscale/trace.js';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SIZES = [1, 2, 4, 8];
/** Five key shapes (prompt bucket, new tokens) of a 128-position model, most popular first. */
const SHAPES: [number, number][] = [
  [16, 16],
  [32, 32],
  [16, 64],
  [64, 32],
  [64, 64],
];
const MAX_WORKERS = 2;
const PREFIX = 'live';
/** The shortest time between two submissions of the producer (ms): arrivals due meanwhile go together. */
const SUBMIT_EVERY_MS = 100;

/** ms from spawning a worker process to its first heartbeat (models loaded, ready to compile). */
async function measureWorkerStart(modelDir: string, redisUrl: string): Promise<number> {
  const ks = new Keyspace({ prefix: 'start-probe' });
  const raw = new Redis(redisUrl);
  const t0 = Date.now();
  const p = new WorkerProcess(['--assigned', '--id', 'probe', '--model', `m=${modelDir}`, '--redis', redisUrl, '--prefix', 'start-probe']);
  try {
    for (;;) {
      if ((await raw.exists(ks.worker('probe'))) === 1) return Date.now() - t0;
      if (!p.running) throw new Error(`the probe worker exited:\n${p.stderr.slice(-8).join('\n')}`);
      if (Date.now() - t0 > 60_000) throw new Error('the probe worker wrote no heartbeat within 60 s');
      await sleep(20);
    }
  } finally {
    await p.stop();
    raw.disconnect();
  }
}

/** A prompt of `tokens` GPT-2 tokens (" a" is one token). */
const promptOf = (tokens: number) => `a${' a'.repeat(tokens - 1)}`;

async function main(): Promise<void> {
  const seed = env('BENCH_SEED', 1);
  const peak = env('BENCH_LIVE_PEAK', 1.2);
  const quietS = env('BENCH_LIVE_QUIET_S', 60);
  const burstS = env('BENCH_LIVE_BURST_S', 40);
  const intervalS = env('BENCH_LIVE_INTERVAL_S', 1);
  const drainS = env('BENCH_LIVE_DRAIN_S', 60);
  const out = (line = '') => process.stdout.write(`${line}\n`);

  const backend = await initBackend('wasm');
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-autoscale-live-'));
  const modelDir = join(dir, 'model');
  await makeModel({ out: modelDir, layers: 2, heads: 4, embd: 128, positions: 128, seed: 1 });
  const model = await loadModel(modelDir, 'm');
  const shapes = await measureShapes(model, SHAPES, SIZES, 2);
  model.dispose();
  out(`Measured in-process (backend ${backend}; 2-layer GPT-2, embd 128, 128 positions, random weights; greedy):`);
  for (const s of shapes)
    out(
      `  ${s.shape.padEnd(16)} compile ${s.compile_s.toFixed(2)} s, B=8 ${s.jobs_per_s_b8.toFixed(1)} jobs/s, B=1 ${s.jobs_per_s_b1.toFixed(1)} jobs/s`,
    );

  const redis = await startRedisServer();
  const raw = new Redis(redis.url);
  const quiet = pino({ level: 'silent' });
  let scaler: Autoscaler | null = null;
  let client: GenerationClient | null = null;
  let poller: NodeJS.Timeout | null = null;
  try {
    const startMs = await measureWorkerStart(modelDir, redis.url);
    out(`Worker start (spawn to first heartbeat): ${(startMs / 1000).toFixed(2)} s`);

    // The trace: bench:autoscale's shape over 5 keys, its load in workers at each key's B=8 rate.
    const keyIds = shapes.map((s) => `m:p${s.P}:n${s.N}:greedy`);
    const weights = zipfWeights(shapes.length, 1.1);
    const unitsPerJob = shapes.reduce((a, s, i) => a + weights[i] / s.jobs_per_s_b8, 0);
    const base = peak / 10 / unitsPerJob;
    const phases = [
      { seconds: quietS, rate: base },
      { seconds: burstS, rate: 10 * base },
      { seconds: quietS, rate: base },
    ];
    const arrivals = poissonTrace(keyIds, weights, phases, seed);
    const shapeOf = new Map(keyIds.map((k, i) => [k, shapes[i]]));
    out(
      `Trace (seed ${seed}): ${shapes.length} keys, Zipf 1.1; ${phases.map((p) => `${p.seconds} s at ${p.rate.toFixed(2)} jobs/s`).join(', ')}; ` +
        `${arrivals.length} jobs; peak load ${peak} workers at B=8.`,
    );

    const ks = new Keyspace({ prefix: PREFIX });
    const driver = new LocalDriver({
      models: [`m=${modelDir}`],
      redisUrl: redis.url,
      prefix: PREFIX,
      workerArgs: [],
      workerLogs: null,
      logger: quiet,
    });
    const settingsIn: Partial<PolicySettings> = { minWorkers: 0, maxWorkers: MAX_WORKERS };
    let peakPlanned = 0;
    let plans = 0;
    scaler = new Autoscaler({
      models: [{ name: 'm', dir: modelDir }],
      redisUrl: redis.url,
      prefix: PREFIX,
      driver,
      intervalS,
      settings: settingsIn,
      logger: quiet,
      onPlan: (p) => {
        plans++;
        peakPlanned = Math.max(peakPlanned, p.workers.filter((w) => w.action !== 'stop').length);
      },
    });
    const settings: PolicySettings = { ...scaler.settings };
    // Each worker process's last heartbeat (ids are reused, pids are not) and when it was first seen.
    const lastBeat = new Map<number, HeartbeatCounts & { compile_s: Record<string, number> }>();
    const firstBeat = new Map<number, number>();
    const poll = async () => {
      for (const h of await readHeartbeats(raw, ks)) {
        const x = h as unknown as HeartbeatCounts & { compile_s?: Record<string, number> };
        if (typeof x.pid !== 'number') continue;
        if (!firstBeat.has(x.pid)) firstBeat.set(x.pid, Date.now());
        lastBeat.set(x.pid, { pid: x.pid, compiles: x.compiles ?? 0, batch_sizes: x.batch_sizes ?? SIZES, compile_s: x.compile_s ?? {} });
      }
    };
    poller = setInterval(() => void poll().catch(() => {}), 250);

    client = await GenerationClient.connect({ redisUrl: redis.url, prefix: PREFIX, models: [{ name: 'm', dir: modelDir }], logger: quiet });
    await scaler.start();

    // The producer: each request at its arrival time (those due together in one batch).
    const t0 = Date.now();
    const handles: BatchHandle[] = [];
    const lagMs: number[] = [];
    let lastSubmit = 0;
    for (let i = 0; i < arrivals.length; ) {
      await sleep(Math.max(0, t0 + arrivals[i].t * 1000 - Date.now(), lastSubmit + SUBMIT_EVERY_MS - Date.now()));
      const now = Date.now();
      const group: number[] = [];
      while (i < arrivals.length && t0 + arrivals[i].t * 1000 <= now) group.push(i++);
      if (group.length === 0) continue; // a timer that fired a little early
      lastSubmit = now;
      const h = await client.submitBatch(
        group.map((j) => {
          const s = shapeOf.get(arrivals[j].key)!;
          return { custom_id: `r${j}`, model: 'm', prompt: promptOf(s.P - 3), max_new_tokens: s.N, do_sample: false };
        }),
        { batchId: `live-${handles.length}` },
      );
      const rep = h.report!;
      if (rep.enqueued !== group.length) throw new Error(`batch ${h.id}: ${rep.enqueued} of ${group.length} enqueued`);
      const unexpected = rep.keys.filter((k) => !keyIds.includes(k));
      if (unexpected.length > 0) throw new Error(`requests landed on keys outside the trace: ${unexpected.join(', ')}`);
      for (const j of group) lagMs.push(now - (t0 + arrivals[j].t * 1000));
      handles.push(h);
    }
    const submittedAt = Date.now();
    for (const h of handles) {
      const r = await h.wait({ timeoutMs: 600_000, pollMs: 100 });
      if (r.counts.completed !== r.counts.total) throw new Error(`batch ${h.id}: ${r.counts.completed}/${r.counts.total} completed`);
    }
    const doneAt = Date.now();
    out(
      `All ${arrivals.length} requests done ${((doneAt - t0) / 1000).toFixed(1)} s after the first arrival; waiting for the workers to stop.`,
    );
    while ((await driver.running()).length > 0 && Date.now() - doneAt < drainS * 1000) await sleep(250);
    const end = Date.now();
    await poll();
    clearInterval(poller);
    poller = null;
    const lives = driver.lifetimes();
    await scaler.close();
    scaler = null;

    const records: ResultRecord[] = [];
    for (const h of handles)
      for (const v of await raw.hvals(ks.batch(h.id).results)) {
        const r = JSON.parse(v) as ResultRecord & { error?: unknown };
        if (r.error === undefined) records.push(r);
      }
    const { waits, missing } = waitsOf(records);
    if (records.length !== arrivals.length || missing > 0)
      throw new Error(`${records.length} results for ${arrivals.length} requests, ${missing} without queued_ms`);
    const liveStarts = lives.flatMap((l) => (firstBeat.has(l.pid) ? [(firstBeat.get(l.pid)! - l.startedAt) / 1000] : []));

    // The prediction: the same trace, the policy, the numbers measured above (unscaled).
    const horizon = (end - t0) / 1000;
    const simKeys: SimKey[] = shapes.map((s, i) => ({
      key: keyIds[i],
      model: 'm',
      compileSeconds: s.compile_s,
      batchSeconds: s.batch_s,
      bytes: (s.P + s.N) * 8,
    }));
    const sim = simulate(simKeys, arrivals, policyController(settings), {
      intervalSeconds: intervalS,
      rateWindowSeconds: intervalS,
      startSeconds: startMs / 1000,
      batchSizes: SIZES,
      horizonSeconds: horizon,
      models: ['m'],
    });

    const lq = waitQuantiles(waits);
    const pq = waitQuantiles(sim.waits);
    const live = {
      p50_wait_s: lq.p50,
      p95_wait_s: lq.p95,
      p99_wait_s: lq.p99,
      worker_s: +workerSeconds(lives, end).toFixed(1),
      compiles: keyCompiles(lastBeat.values()),
      peak_workers: peakPlanned,
    };
    const predicted = {
      p50_wait_s: pq.p50,
      p95_wait_s: pq.p95,
      p99_wait_s: pq.p99,
      worker_s: +sim.workerSeconds.toFixed(1),
      compiles: sim.compiles,
      peak_workers: sim.peakWorkers,
    };
    const metrics = Object.keys(live) as (keyof typeof live)[];
    const rows = metrics.map((m) => ({
      metric: m,
      live: live[m],
      predicted: predicted[m],
      live_over_predicted: ratio(live[m], predicted[m]),
    }));
    const lagSorted = waitQuantiles(lagMs.map((x) => x / 1000));
    // Waits by the phase their request arrived in (the simulator's are in arrival order when all were served).
    const names = ['quiet', 'burst', 'quiet after'];
    const livePhase = names.map(() => [] as number[]);
    for (const r of records) livePhase[phaseOf(arrivals[Number(r.custom_id.slice(1))].t, phases)].push(r.queued_ms! / 1000);
    const simPhase = names.map(() => [] as number[]);
    if (sim.unserved === 0) sim.waits.forEach((w, j) => simPhase[phaseOf(arrivals[j].t, phases)].push(w));
    const byPhase = names.map((name, i) => ({
      phase: name,
      jobs: livePhase[i].length,
      live: waitQuantiles(livePhase[i]),
      predicted: waitQuantiles(simPhase[i]),
    }));

    out();
    out(
      `Live: ${lives.length} worker processes (${peakConcurrent(lives, end)} at once at most), ${plans} plans; ` +
        `worker start in the run: ${liveStarts.map((s) => s.toFixed(2)).join(', ')} s; ` +
        `producer lag behind the trace p50 ${lagSorted.p50} s, p95 ${lagSorted.p95} s; ${sim.unserved} unserved in the simulation.`,
    );
    const cols = ['metric', 'live', 'predicted', 'live_over_predicted'] as const;
    const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
    out(cols.map((c, i) => c.padEnd(width[i])).join('  '));
    for (const r of rows) out(cols.map((c, i) => String(r[c]).padEnd(width[i])).join('  '));
    out();
    out('Waits by the phase of arrival, live (predicted), p50 / p95 / p99 in seconds:');
    for (const p of byPhase)
      out(
        `  ${p.phase.padEnd(12)} ${String(p.jobs).padStart(5)} jobs  ` +
          `${p.live.p50} / ${p.live.p95} / ${p.live.p99}  (${p.predicted.p50} / ${p.predicted.p95} / ${p.predicted.p99})`,
      );

    mkdirSync('bench/results', { recursive: true });
    writeFileSync(
      'bench/results/autoscale-live.json',
      `${JSON.stringify(
        {
          backend,
          measured: shapes,
          worker_start_s: startMs / 1000,
          live_worker_start_s: liveStarts,
          trace: { seed, keys: keyIds, zipf: 1.1, phases, jobs: arrivals.length, peak_load: peak },
          interval_s: intervalS,
          settings,
          horizon_s: horizon,
          submitted_s: (submittedAt - t0) / 1000,
          done_s: (doneAt - t0) / 1000,
          producer_lag_s: lagSorted,
          live: { ...live, processes: lives.length, concurrent_peak: peakConcurrent(lives, end), plans },
          predicted: { ...predicted, unserved: sim.unserved, compile_s: sim.compileSeconds },
          rows,
          by_phase: byPhase,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    if (poller) clearInterval(poller);
    await scaler?.close();
    await client?.close();
    raw.disconnect();
    await redis.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
