/**
 * `npm run bench:autoscale`: the compile-aware policy against KEDA-like, HPA-like and fixed fleets,
 * in the discrete-event simulator (bench/autoscale/simulator.ts), on a seeded bursty trace.
 *
 * Compile seconds and service rates come from the real engine first: a small random GPT-2 is made
 * in a temp folder and, for a few key shapes, every batch size is compiled and run. The simulator
 * scales them (one factor for compile times, one for service rates, both printed) to a GPU-like
 * system, keeping the ratios between shapes as measured.
 *
 * Env: BENCH_SEED (default 1), BENCH_COMPILE_S (median key compile in the simulator, default 60),
 * BENCH_RATE (median jobs/s at B=8 in the simulator, default 2), BENCH_START_S (default 30).
 * Prints a table, writes bench/results/autoscale.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, loadModel, makeModel } from '../src/compiler/index.js';
import { DEFAULT_POLICY_SETTINGS } from '../src/autoscaler/policy-settings.js';
import type { PolicySettings } from '../src/autoscaler/types.js';
import { fixedController, hpaController, kedaController, policyController } from './autoscale/controllers.js';
import { type Controller, quantile, type SimKey, type SimResult, simulate } from './autoscale/simulator.js';
import { type Measured, measureShapes } from './autoscale/measure.js';
import { poissonTrace, zipfWeights } from './autoscale/trace.js';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const SIZES = [1, 2, 4, 8];

/** Compile every batch size of a few key shapes on the real engine and time one batch of each. */
async function measure(): Promise<{ backend: string; shapes: Measured[] }> {
  const backend = await initBackend((process.env.BATCHGEN_BACKEND as 'wasm' | undefined) ?? 'wasm');
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-autoscale-'));
  try {
    await makeModel({ out: dir, layers: 2, heads: 4, embd: 128, positions: 256, seed: 1 });
    const model = await loadModel(dir, 'm');
    const shapes = await measureShapes(
      model,
      [
        [16, 16],
        [64, 32],
        [128, 64],
      ],
      SIZES,
    );
    return { backend, shapes };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => quantile(xs, 0.5);

async function main(): Promise<void> {
  const seed = env('BENCH_SEED', 1);
  const { backend, shapes } = await measure();
  const compileScale = env('BENCH_COMPILE_S', 60) / median(shapes.map((s) => s.compile_s));
  const rateScale = env('BENCH_RATE', 2) / median(shapes.map((s) => s.jobs_per_s_b8));
  const startSeconds = env('BENCH_START_S', 30);

  // 14 keys over two models, cycling through the measured shapes (the strategy only names them
  // apart: every key runs at its shape's measured greedy numbers); Zipf(1.1) popularity.
  const nKeys = 14;
  const keys: SimKey[] = Array.from({ length: nKeys }, (_, i) => {
    const m = shapes[i % shapes.length];
    const model = i % 2 === 0 ? 'a' : 'b';
    return {
      key: `${model}:p${m.P}:n${m.N}:${['greedy', 'sample', 'beam2'][Math.floor(i / 6)]}`,
      model,
      compileSeconds: m.compile_s * compileScale,
      batchSeconds: Object.fromEntries(SIZES.map((B) => [B, m.batch_s[B] / rateScale])),
      bytes: (m.P + m.N) * 8,
    };
  });
  const weights = zipfWeights(nKeys, 1.1);
  const rate8 = (k: SimKey) => 8 / k.batchSeconds[8];
  // Worker-units per job/s of total arrivals, at B=8 (the rate a busy key is served at).
  const unitsPerJob = keys.reduce((a, k, i) => a + weights[i] / rate8(k), 0);
  // A day compressed: 15 min quiet at 1.5 workers of load, 10 min at 10x, 15 min quiet.
  const base = 1.5 / unitsPerJob;
  const phases = [
    { seconds: 900, rate: base },
    { seconds: 600, rate: 10 * base },
    { seconds: 900, rate: base },
  ];
  const arrivals = poissonTrace(
    keys.map((k) => k.key),
    weights,
    phases,
    seed,
  );
  const duration = phases.reduce((a, p) => a + p.seconds, 0);
  const horizon = duration + 900;
  const meanLoad = (arrivals.length / duration) * unitsPerJob;
  const peakLoad = 10 * base * unitsPerJob;
  // Fixed fleets sized as a capacity plan would: 80% busy at the peak (or the mean) load.
  const peakFleet = Math.ceil(peakLoad / 0.8);
  const meanFleet = Math.ceil(meanLoad / 0.8);
  const maxWorkers = 2 * peakFleet;
  const budget = 6 * median(keys.map((k) => k.bytes));
  const meanRate = median(keys.map(rate8));
  const bytesOf = (key: string) => keys.find((k) => k.key === key)!.bytes;

  const settings: PolicySettings = { ...DEFAULT_POLICY_SETTINGS, maxWorkers };
  const options = { intervalSeconds: 5, startSeconds, horizonSeconds: horizon, budgetBytes: budget, models: ['a', 'b'] };
  const fleet = (n: number) => Array.from({ length: n }, (_, i) => `w-${i + 1}`);
  const runs: [string, Controller, string[]][] = [
    ['batchgen policy', policyController(settings), []],
    [
      'KEDA-like (per key, 300 s cooldown)',
      kedaController({
        targetWaitSeconds: settings.targetWaitSeconds,
        cooldownSeconds: 300,
        maxReplicas: maxWorkers,
        defaultServiceRate: meanRate,
      }),
      [],
    ],
    [
      'HPA-like pool (total backlog, round-robin keys)',
      hpaController({ targetWaitSeconds: settings.targetWaitSeconds, windowSeconds: 300, maxReplicas: maxWorkers, serviceRate: meanRate }),
      [],
    ],
    [`fixed fleet, peak (${peakFleet})`, fixedController(peakFleet, budget, bytesOf), fleet(peakFleet)],
    [`fixed fleet, mean (${meanFleet})`, fixedController(meanFleet, budget, bytesOf), fleet(meanFleet)],
  ];
  const results: { name: string; r: SimResult }[] = runs.map(([name, c, initialWorkers]) => ({
    name,
    r: simulate(keys, arrivals, c, { ...options, initialWorkers }),
  }));

  const row = ({ name, r }: { name: string; r: SimResult }) => ({
    controller: name,
    p50_wait_s: +quantile(r.waits, 0.5).toFixed(1),
    p95_wait_s: +quantile(r.waits, 0.95).toFixed(1),
    p99_wait_s: +quantile(r.waits, 0.99).toFixed(1),
    unserved: r.unserved,
    worker_s: Math.round(r.workerSeconds),
    peak_workers: r.peakWorkers,
    compiles: r.compiles,
    compile_s: Math.round(r.compileSeconds),
  });
  const rows = results.map(row);
  const [ours, keda, , peak] = rows;
  const targets = {
    p95_vs_peak_fleet: +(ours.p95_wait_s / Math.max(peak.p95_wait_s, 1e-9)).toFixed(2),
    worker_s_vs_peak_fleet: +(ours.worker_s / peak.worker_s).toFixed(2),
    compiles_keda_over_ours: +(keda.compiles / Math.max(1, ours.compiles)).toFixed(2),
    p95_ours_le_keda: ours.p95_wait_s <= keda.p95_wait_s,
  };
  const met = {
    p95_within_1_5x_of_peak: targets.p95_vs_peak_fleet <= 1.5,
    at_most_half_worker_s: targets.worker_s_vs_peak_fleet <= 0.5,
    two_x_fewer_compiles_than_keda: targets.compiles_keda_over_ours >= 2,
    p95_le_keda: targets.p95_ours_le_keda,
  };

  const out = (line = '') => process.stdout.write(`${line}\n`);
  out(`Measured on the real engine (backend ${backend}; 2-layer GPT-2, embd 128, random weights; greedy; batch sizes ${SIZES.join(',')}):`);
  for (const s of shapes) {
    out(
      `  ${s.shape.padEnd(18)} compile ${s.compile_s.toFixed(2)} s, B=8 ${s.jobs_per_s_b8.toFixed(1)} jobs/s, B=1 ${s.jobs_per_s_b1.toFixed(1)} jobs/s`,
    );
  }
  out(
    `Scaled into the simulator: compile × ${compileScale.toFixed(1)} (median key ${env('BENCH_COMPILE_S', 60)} s), ` +
      `service time ÷ ${rateScale.toFixed(3)} (median key ${env('BENCH_RATE', 2)} jobs/s at B=8); ratios between shapes as measured.`,
  );
  out(
    `Trace (seed ${seed}): ${nKeys} keys, Zipf 1.1; ${phases.map((p) => `${p.seconds} s at ${p.rate.toFixed(2)} jobs/s`).join(', ')}; ` +
      `${arrivals.length} jobs. Load: mean ${meanLoad.toFixed(2)}, peak ${peakLoad.toFixed(2)} workers. ` +
      `Workers start in ${startSeconds} s; budget ${budget} bytes (6 median keys); max workers ${maxWorkers}; horizon ${horizon} s.`,
  );
  out();
  const cols = Object.keys(rows[0]) as (keyof (typeof rows)[0])[];
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  out(cols.map((c, i) => c.padEnd(width[i])).join('  '));
  for (const r of rows) out(cols.map((c, i) => String(r[c]).padEnd(width[i])).join('  '));
  out();
  out(
    `batchgen policy: p95 ${targets.p95_vs_peak_fleet}× the peak fleet's (target ≤ 1.5×: ${met.p95_within_1_5x_of_peak ? 'met' : 'NOT met'}), ` +
      `${targets.worker_s_vs_peak_fleet}× its worker-seconds (target ≤ 0.5×: ${met.at_most_half_worker_s ? 'met' : 'NOT met'}); ` +
      `KEDA-like compiles ${targets.compiles_keda_over_ours}× as often (target ≥ 2×: ${met.two_x_fewer_compiles_than_keda ? 'met' : 'NOT met'}) ` +
      `at p95 ${keda.p95_wait_s} s against ${ours.p95_wait_s} s (${met.p95_le_keda ? 'met' : 'NOT met'}).`,
  );

  mkdirSync('bench/results', { recursive: true });
  writeFileSync(
    'bench/results/autoscale.json',
    `${JSON.stringify(
      {
        backend,
        measured: shapes,
        scale: { compile: compileScale, service_rate: rateScale, start_seconds: startSeconds },
        trace: { seed, keys: nKeys, zipf: 1.1, phases, jobs: arrivals.length, mean_load: meanLoad, peak_load: peakLoad },
        settings,
        rows,
        targets,
        met,
      },
      null,
      2,
    )}\n`,
  );
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
