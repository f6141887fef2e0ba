/**
 * `npm run bench`: decode speed of compiled variants on a GPT-2-small-shaped model (random weights
 * made on the fly), against the step's two physical limits measured in the same run (its matmul
 * flops at the kernels' peak, and reading its weights at one core's memory bandwidth) and against
 * the obvious one-request-at-a-time implementation, all in one run. Prints a table, writes bench/results/compiler.json.
 *
 * Runs stock tfjs-wasm kernels and native (oneDNN) kernels side by side, each batch size under each.
 * Then the Llama-family rows (bench/families.ts), a SmolLM2-135M and a Qwen2.5-0.5B shape, under each.
 *
 * Env: BENCH_BATCHES (default 1,8,16,32), BENCH_REQUESTS (default 16; at least B per row),
 * BENCH_THREADS (native thread counts, default 1,2), BENCH_LAYERS/EMBD/HEADS to shrink,
 * BENCH_PEER_RUNNER and BENCH_PEER_MODEL to measure the peer in the same run (bench/peer.ts),
 * BENCH_FAMILIES=0 to skip the Llama-family rows.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baselineGreedy } from './baseline.js';
import { familyRows } from './families.js';
import type { DeviceWeights } from '../src/compiler/gpt2.js';
import { peerConfigured, runPeer } from './peer.js';
import {
  CompiledVariant,
  initBackend,
  type KernelsName,
  kernelsInfo,
  loadModel,
  makeModel,
  nativeStats,
  retraces,
  setKernelThreads,
  tf,
  useKernels,
} from '../src/compiler/index.js';
import { loadAddon } from '../src/compiler/native/addon.js';
import { topKTopP, topKTopPCandidates } from '../src/compiler/logits.js';
import type { RowRequest } from '../src/compiler/types.js';
import { resolveParams } from '../src/shared/params.js';

const P = 64;
const N = 32;
const env = (k: string, d: number) => Number(process.env[k] ?? d);
const batches = (process.env.BENCH_BATCHES ?? '1,8,16,32').split(',').map(Number);
const threadCounts = (process.env.BENCH_THREADS ?? '1,2').split(',').map(Number);
const nRequests = env('BENCH_REQUESTS', 16);

/** f32 matmul throughput of the current kernels, in GFLOP/s: [M, K] x [K, N], median of runs. */
async function matmulGflops(M: number, K: number, N: number): Promise<number> {
  const a = tf.randomNormal([M, K]);
  const b = tf.randomNormal([K, N]);
  // Read the result back: it must have run (async backends); data(), as webgpu has no sync read.
  const once = async () => {
    const c = tf.matMul(a, b);
    await c.data();
    c.dispose();
  };
  await once();
  const ms: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await once();
    ms.push(performance.now() - t0);
  }
  tf.dispose([a, b]);
  return +((2 * M * K * N) / ms.sort((x, y) => x - y)[2] / 1e6).toFixed(1);
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
  const read = async (f: () => tf.Tensor) => {
    const t = f();
    const d = await t.data();
    t.dispose();
    return d;
  };
  const median = async (f: () => tf.Tensor) => {
    await read(f);
    const ts: number[] = [];
    for (let i = 0; i < 7; i++) {
      const t = performance.now();
      await read(f);
      ts.push(performance.now() - t);
    }
    return +ts.sort((a, b) => a - b)[3].toFixed(1);
  };
  const full = await median(() => tf.tidy(() => topKTopP(p)(s)));
  const cands = await median(() => tf.tidy(() => topKTopPCandidates(s, p, ones).filtered));
  const fits = Array.from(await read(() => tf.tidy(() => topKTopPCandidates(s, p, ones).fits))).every((f) => f === 1);
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

  const greedy = resolveParams({ max_new_tokens: N, do_sample: false }, { ...model.defaults, eos_token_id: [] });
  const rowsFor = (lens: number[]): RowRequest[] =>
    lens.map((L, i) => ({ promptIds: Array.from({ length: L }, (_, j) => (i * 977 + j * 31) % 50000), params: greedy }));

  // Both kernel providers in this one run (native only when the addon is built), each with its own
  // matmul peak measured here, then each batch size; native also at more threads (one process).
  const native = loadAddon().addon !== null && backend === 'wasm';
  const providers: { kernels: KernelsName; threads: number }[] = [{ kernels: 'stock', threads: 1 }];
  if (native) for (const t of threadCounts) providers.push({ kernels: 'native', threads: t });
  const peaks: Record<string, { mlp_gflops: number; square_2048_gflops: number }> = {};
  const rows: Record<string, unknown>[] = [];
  // The other limit of a decode step: it reads every weight once, from memory (f32).
  const readGBs = native ? +loadAddon().addon!.readBandwidth().toFixed(1) : null;
  const weightBytes = 4 * params;
  for (const { kernels, threads } of providers) {
    useKernels(kernels);
    if (kernels === 'native') setKernelThreads(threads);
    const label = kernels === 'native' ? `native ${threads}t` : 'stock';
    const gflops = {
      mlp_gflops: await matmulGflops(512, c.n_embd, 4 * c.n_embd),
      square_2048_gflops: await matmulGflops(2048, 2048, 2048),
    };
    peaks[label] = gflops;
    const peak = Math.max(gflops.mlp_gflops, gflops.square_2048_gflops);
    for (const B of threads === 1 ? batches : batches.filter((b) => b >= 8)) {
      t0 = performance.now();
      const v = await CompiledVariant.compile(model, { model: model.name, P, N, strategy: 'greedy' }, B);
      const compileMs = performance.now() - t0;
      const reqs = rowsFor(lengths(Math.max(nRequests, B)));
      let tokens = 0;
      let decodeMs = 0;
      let prefillMs = 0;
      let steps = 0;
      let runs = 0;
      t0 = performance.now();
      for (let s = 0; s < reqs.length; s += B) {
        const res = await v.run(reqs.slice(s, s + B));
        tokens += res.reduce((n, r) => n + r.tokenIds.length, 0);
        decodeMs += v.lastRun.decodeMs;
        prefillMs += v.lastRun.prefillMs;
        steps += v.lastRun.steps;
        runs += 1;
      }
      const wallMs = performance.now() - t0;
      const stepMs = decodeMs / steps;
      // The step's lower bounds: its matmul flops at this provider's measured peak, and reading its
      // weights at the measured memory bandwidth; the roofline is the larger.
      const computeMs = (2 * params * B) / (peak * 1e6);
      const memoryMs = readGBs ? weightBytes / (readGBs * 1e6) : 0;
      const rooflineMs = Math.max(computeMs, memoryMs);
      rows.push({
        backend,
        kernels,
        threads,
        B,
        compile_ms: Math.round(compileMs),
        prefill_ms: Math.round(prefillMs / runs),
        decode_ms_per_step: +stepMs.toFixed(1),
        ms_per_token: +(stepMs / B).toFixed(2),
        compute_roofline_ms: +computeMs.toFixed(1),
        memory_roofline_ms: +memoryMs.toFixed(1),
        step_over_compute_roofline: +(stepMs / computeMs).toFixed(2),
        step_over_roofline: +(stepMs / rooflineMs).toFixed(2),
        ...(kernels === 'native' ? { layouts: nativeStats().layouts } : {}),
        tokens_per_s: +((tokens / wallMs) * 1000).toFixed(1),
        requests: reqs.length,
      });
      v.dispose();
      console.error(`${label} B=${B}: ${JSON.stringify(rows[rows.length - 1])}`);
    }
  }
  if (native) setKernelThreads(1);
  const stockPeak = peaks.stock;
  const nativePeak = peaks['native 1t'];

  // The obvious implementation: one request at a time, exact length, growing cache (default kernels).
  useKernels(native ? 'native' : 'stock');
  const reqs = rowsFor(lengths(nRequests));
  await baselineGreedy(model.weights as DeviceWeights, reqs[0].promptIds, 2); // warm the backend's kernels
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
  const baseline = {
    what: 'one at a time, exact length, growing cache',
    kernels: native ? 'native' : 'stock',
    B: 1,
    prefill_ms: Math.round(basePrefill / reqs.length),
    decode_ms_per_step: +(baseDecode / (reqs.length * (N - 1))).toFixed(1),
    tokens_per_s: +baseTps.toFixed(1),
    requests: reqs.length,
  };
  for (const r of rows) r.vs_one_at_a_time = +((r.tokens_per_s as number) / baseTps).toFixed(2);
  const nativeOverStock = rows
    .filter((r) => r.kernels === 'native' && r.threads === 1)
    .map((r) => {
      const s = rows.find((x) => x.kernels === 'stock' && x.B === r.B)!;
      const ratio = (k: string) => +((s[k] as number) / (r[k] as number)).toFixed(2);
      return { B: r.B, decode_step: ratio('decode_ms_per_step'), prompt_pass: ratio('prefill_ms') };
    });

  // The peer, same run: B=1 and 8 on one onnxruntime thread, B=8 on two.
  const peer = peerConfigured() ? [runPeer(1, P, N, 1), runPeer(8, P, N, 1), runPeer(8, P, N, 2)] : [];
  const peerB8 = peer.find((r) => r.B === 8 && r.threads === 1);
  const vsPeer = peerB8
    ? rows
        .filter((r) => r.B === 8)
        .map((r) => ({
          kernels: r.kernels,
          threads: r.threads,
          decode_step_speedup: +(peerB8.decode_ms_per_step / (r.decode_ms_per_step as number)).toFixed(2),
          prompt_pass_speedup: +(peerB8.prefill_ms / (r.prefill_ms as number)).toFixed(2),
        }))
    : [];

  const topP = await topPFilterMs(c.vocab_size);

  // The Llama family, same run: a SmolLM2-135M and a Qwen2.5-0.5B shape, under each provider (1 thread).
  const families: Record<string, unknown>[] = [];
  for (const kernels of native ? (['stock', 'native'] as const) : (['stock'] as const)) {
    useKernels(kernels);
    families.push(...(await familyRows(kernels)));
  }
  useKernels(native ? 'native' : 'stock');

  const report = {
    backend,
    kernels_default: kernelsInfo().kernels,
    native_library: native ? loadAddon().addon!.version() : null,
    model: { layers: c.n_layer, embd: c.n_embd, heads: c.n_head, vocab: c.vocab_size, params_per_step: params },
    P,
    N,
    matmul_peaks: peaks,
    memory_read_gbs_one_thread: readGBs,
    weight_bytes_per_step: weightBytes,
    native_peak_single_thread_gflops: nativePeak ? Math.max(nativePeak.mlp_gflops, nativePeak.square_2048_gflops) : null,
    stock_peak_gflops: Math.max(stockPeak.mlp_gflops, stockPeak.square_2048_gflops),
    load_ms: Math.round(loadMs),
    retraces: retraces(),
    rows,
    baseline,
    llama_family: families,
    native_over_stock: nativeOverStock,
    peer,
    vs_peer_b8_one_thread: vsPeer,
    native_stats: nativeStats(),
    top_p_filter_b8: topP,
    when: new Date().toISOString(),
  };
  console.log(
    `backend ${backend} · ${c.n_layer} layers × ${c.n_embd}, vocab ${c.vocab_size} · P=${P} N=${N} greedy · retraces ${retraces()}`,
  );
  console.log('matmul peaks (GFLOP/s, [512, E] x [E, 4E] and 2048³):', JSON.stringify(peaks));
  if (readGBs) console.log(`memory read, one thread: ${readGBs} GB/s; weights read per decode step: ${(weightBytes / 1e6).toFixed(0)} MB`);
  console.table(rows);
  console.table([baseline]);
  console.table(families);
  console.log('native over stock (time ratio, same run):', JSON.stringify(nativeOverStock));
  if (peer.length) {
    console.table(peer);
    console.log('speed-up over the peer at B=8 on one onnxruntime thread:', JSON.stringify(vsPeer));
  }
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
