/**
 * `npm run bench`: decode speed of compiled variants on a GPT-2-small-shaped model (random weights
 * made on the fly), against the backend's own matmul throughput and against the obvious
 * one-request-at-a-time implementation, all in one run. Prints a table, writes bench/results/compiler.json.
 *
 * Then the Llama-family rows (bench/families.ts): SmolLM2-135M and Qwen2.5-0.5B shapes.
 *
 * Env: BENCH_BATCHES (default 1,8,16), BENCH_REQUESTS (default 16), BENCH_LAYERS/EMBD/HEADS to shrink,
 * BENCH_FAMILIES=0 to skip the Llama-family rows.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baselineGreedy } from './baseline.js';
import { familyRows } from './families.js';
import type { DeviceWeights } from '../src/compiler/gpt2.js';
import { CompiledVariant, initBackend, loadModel, makeModel, retraces, tf } from '../src/compiler/index.js';
import { topKTopP, topKTopPCandidates } from '../src/compiler/logits.js';
import type { RowRequest } from '../src/compiler/types.js';
import { resolveParams } from '../src/shared/params.js';

const P = 64;
const N = 32;
const env = (k: string, d: number) => Number(process.env[k] ?? d);
const batches = (process.env.BENCH_BATCHES ?? '1,8,16').split(',').map(Number);
const nRequests = env('BENCH_REQUESTS', 16);

/** Peak f32 matmul throughput of the backend, in GFLOP/s: [512, E] x [E, 4E], the MLP's shape. */
async function matmulGflops(E: number): Promise<number> {
  const a = tf.randomNormal([512, E]);
  const b = tf.randomNormal([E, 4 * E]);
  const once = () => tf.matMul(a, b).dispose();
  once();
  const reps = 10;
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) once();
  const last = tf.matMul(a, b);
  await last.data(); // make sure everything ran (async backends)
  last.dispose();
  const ms = (performance.now() - t0) / (reps + 1);
  tf.dispose([a, b]);
  return (2 * 512 * E * 4 * E) / ms / 1e6;
}

/**
 * The top-p filter at [8, V] on peaked logits (a nucleus of tens of tokens, as trained models give):
 * full sort against the nucleus candidates, median ms of each, side by side.
 */
async function topPFilterMs(V: number): Promise<{ full_sort_ms: number; nucleus_candidates_ms: number; nucleus_fits: boolean }> {
  const R = 8;
  const s = tf.mul(tf.randomNormal([R, V], 0, 1, 'float32', 7), 8) as tf.Tensor2D;
  const ones = tf.ones([R, 1]) as tf.Tensor2D;
  const p = {
    penalty: ones,
    invTemperature: ones,
    topKIndex: tf.fill([R, 1], V - 1, 'int32') as tf.Tensor2D,
    topP: tf.fill([R, 1], 0.9) as tf.Tensor2D,
  };
  // Each run ends with a readback of its result, so that async backends have finished it.
  const median = async (f: () => tf.Tensor) => {
    const once = async () => {
      const out = f();
      await out.data();
      out.dispose();
    };
    await once();
    const ts: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = performance.now();
      await once();
      ts.push(performance.now() - t);
    }
    return +ts.sort((a, b) => a - b)[3].toFixed(1);
  };
  const full = await median(() => tf.tidy(() => topKTopP(p)(s)));
  const cands = await median(() => tf.tidy(() => topKTopPCandidates(s, p, ones).filtered));
  const fitsT = tf.tidy(() => topKTopPCandidates(s, p, ones).fits);
  const fits = Array.from(await fitsT.data()).every((f) => f === 1);
  fitsT.dispose();
  tf.dispose([s, ones, p.topKIndex, p.topP]);
  return { full_sort_ms: full, nucleus_candidates_ms: cands, nucleus_fits: fits };
}

function lengths(n: number): number[] {
  // Deterministic spread of prompt lengths over the bucket (33..64), all in prompt bucket P=64.
  return Array.from({ length: n }, (_, i) => 33 + ((i * 13) % 32));
}

async function main(): Promise<void> {
  const backend = await initBackend((process.env.BATCHGEN_BACKEND as 'wasm' | undefined) ?? 'wasm');
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-bench-'));
  const layers = env('BENCH_LAYERS', 12);
  const embd = env('BENCH_EMBD', 768);
  const heads = env('BENCH_HEADS', 12);
  let t0 = performance.now();
  await makeModel({ out: dir, layers, heads, embd, positions: 1024, seed: 1 });
  const model = await loadModel(dir, 'gpt2-shaped');
  const loadMs = performance.now() - t0;
  const c = model.as('gpt2').folder.config;
  // Parameters touched per decode step: all matmul weights, the output projection included.
  const params = c.n_layer * 12 * c.n_embd * c.n_embd + c.vocab_size * c.n_embd;

  const gflops = await matmulGflops(c.n_embd);
  const greedy = resolveParams({ max_new_tokens: N, do_sample: false }, { ...model.defaults, eos_token_id: [] });
  const rowsFor = (lens: number[]): RowRequest[] =>
    lens.map((L, i) => ({ promptIds: Array.from({ length: L }, (_, j) => (i * 977 + j * 31) % 50000), params: greedy }));

  const rows: Record<string, unknown>[] = [];
  for (const B of batches) {
    t0 = performance.now();
    const v = await CompiledVariant.compile(model, { model: model.name, P, N, strategy: 'greedy' }, B);
    const compileMs = performance.now() - t0;
    const reqs = rowsFor(lengths(nRequests));
    let tokens = 0;
    let decodeMs = 0;
    let prefillMs = 0;
    let steps = 0;
    t0 = performance.now();
    for (let s = 0; s < reqs.length; s += B) {
      const res = await v.run(reqs.slice(s, s + B));
      tokens += res.reduce((n, r) => n + r.tokenIds.length, 0);
      decodeMs += v.lastRun.decodeMs;
      prefillMs += v.lastRun.prefillMs;
      steps += v.lastRun.steps;
    }
    const wallMs = performance.now() - t0;
    const stepMs = decodeMs / steps;
    const rooflineMs = (2 * params * B) / (gflops * 1e6);
    rows.push({
      what: `bucketed B=${B}`,
      B,
      compile_ms: Math.round(compileMs),
      prefill_ms_total: Math.round(prefillMs),
      ms_per_step: +stepMs.toFixed(1),
      roofline_ms: +rooflineMs.toFixed(1),
      step_over_roofline: +(stepMs / rooflineMs).toFixed(2),
      tokens_per_s: +((tokens / wallMs) * 1000).toFixed(1),
      requests: reqs.length,
    });
    v.dispose();
  }

  // The obvious implementation: one request at a time, exact length, growing cache.
  const reqs = rowsFor(lengths(nRequests));
  await baselineGreedy(model.weights as DeviceWeights, reqs[0].promptIds, 2); // warm the backend's kernels (XNNPACK packing)
  t0 = performance.now();
  let tokens = 0;
  let basePrefill = 0;
  let baseDecode = 0;
  for (const r of reqs) {
    const res = await baselineGreedy(model.weights as DeviceWeights, r.promptIds, N);
    tokens += res.tokens.length;
    basePrefill += res.prefillMs;
    baseDecode += res.decodeMs;
  }
  const baseMs = performance.now() - t0;
  const baseTps = (tokens / baseMs) * 1000;
  rows.push({
    what: 'one at a time, exact length, growing cache',
    B: 1,
    prefill_ms_total: Math.round(basePrefill),
    ms_per_step: +(baseDecode / (reqs.length * (N - 1))).toFixed(1),
    tokens_per_s: +baseTps.toFixed(1),
    requests: reqs.length,
  });
  for (const r of rows) if (r.what !== rows[rows.length - 1].what) r.vs_one_at_a_time = +((r.tokens_per_s as number) / baseTps).toFixed(2);

  const topP = await topPFilterMs(c.vocab_size);
  // The Llama family in the same run and table (their own models, loaded after GPT-2's is measured).
  rows.push(...(await familyRows()));

  const report = {
    backend,
    model: { layers: c.n_layer, embd: c.n_embd, heads: c.n_head, vocab: c.vocab_size, params_per_step: params },
    P,
    N,
    matmul_gflops: +gflops.toFixed(1),
    load_ms: Math.round(loadMs),
    retraces: retraces(),
    rows,
    top_p_filter_b8: topP,
    when: new Date().toISOString(),
  };
  console.log(
    `backend ${backend} · ${c.n_layer} layers × ${c.n_embd}, vocab ${c.vocab_size} · P=${P} N=${N} greedy · matmul ${gflops.toFixed(1)} GFLOP/s · retraces ${retraces()}`,
  );
  console.table(rows);
  console.log(
    `top-p 0.9 filter at [8, ${c.vocab_size}], peaked logits: full sort ${topP.full_sort_ms} ms, nucleus candidates ${topP.nucleus_candidates_ms} ms (fits: ${topP.nucleus_fits})`,
  );
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/compiler.json', `${JSON.stringify(report, null, 2)}\n`);
  console.log('wrote bench/results/compiler.json');
  model.dispose();
  rmSync(dir, { recursive: true, force: true });
}

await main();
