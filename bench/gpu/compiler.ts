/**
 * `npm run bench:gpu`: the compiler table on whatever backend BATCHGEN_BACKEND gives (webgpu on a
 * GPU host; wasm or webgpu on lavapipe elsewhere): per variant (B, greedy or sampling) its compile
 * seconds, pipelines its warm-up created, ms per decode step, prefill, tokens/s, and pipelines and
 * retraces after warm-up (both must be 0). Random weights of the shape asked for (GPT-2 small by
 * default), made on the fly or reused from GPU_MODEL_DIR. Prints a table, writes JSON.
 *
 * Env: GPU_LAYERS/GPU_EMBD/GPU_HEADS/GPU_VOCAB (12/768/12/50257), GPU_P/GPU_N (64/32),
 * GPU_BATCHES (1,8,32, greedy), GPU_SAMPLE_BATCHES (32, sampling with top-p 0.9; empty for none),
 * GPU_RUNS (3 batches per variant), GPU_MODEL_DIR, GPU_OUT (bench/results/gpu-<backend>.json).
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  CompiledVariant,
  initBackend,
  kernelProvider,
  loadModel,
  makeModel,
  pipelineStats,
  pipelinesAfterWarmup,
  retraces,
  tf,
  type BackendName,
  type RowRequest,
} from '../../src/compiler/index.js';
import { webgpuAdapter } from '../../src/compiler/webgpu.js';
import { resolveParams, type GenerationParams } from '../../src/shared/params.js';

const num = (k: string, d: number) => Number(process.env[k] ?? d);
const list = (k: string, d: string) => (process.env[k] ?? d).split(',').filter(Boolean).map(Number);

async function main(): Promise<void> {
  const t00 = performance.now();
  const backend = await initBackend(process.env.BATCHGEN_BACKEND as BackendName | undefined);
  const shape = { layers: num('GPU_LAYERS', 12), embd: num('GPU_EMBD', 768), heads: num('GPU_HEADS', 12), vocab: num('GPU_VOCAB', 50257) };
  const [P, N, runs] = [num('GPU_P', 64), num('GPU_N', 32), num('GPU_RUNS', 3)];
  const own = !process.env.GPU_MODEL_DIR;
  const dir = process.env.GPU_MODEL_DIR ?? mkdtempSync(join(tmpdir(), 'batchgen-gpu-'));
  let t0 = performance.now();
  if (!existsSync(join(dir, 'config.json'))) await makeModel({ out: dir, ...shape, positions: 1024, seed: 1 });
  const makeMs = performance.now() - t0;
  t0 = performance.now();
  const model = await loadModel(dir, 'gpt2-shaped');
  const loadMs = performance.now() - t0;
  const V = model.folder.config.vocab_size;
  const noEos = { ...model.defaults, eos_token_id: [] };
  const rowsFor = (B: number, req: GenerationParams, run: number): RowRequest[] =>
    Array.from({ length: B }, (_, i) => ({
      // Lengths spread over the bucket; ids spread over the vocabulary; the same on every backend.
      promptIds: Array.from({ length: 1 + ((i * 37 + run * 11) % P) }, (_, j) => (i * 977 + j * 31 + run * 7) % V),
      params: resolveParams({ ...req, max_new_tokens: N, ...(req.do_sample ? { seed: 1000 * run + i } : {}) }, noEos),
    }));

  const plan: [number, 'greedy' | 'sample'][] = [
    ...list('GPU_BATCHES', '1,8,32').map((B): [number, 'greedy'] => [B, 'greedy']),
    ...list('GPU_SAMPLE_BATCHES', '32').map((B): [number, 'sample'] => [B, 'sample']),
  ];
  const results: Record<string, unknown>[] = [];
  for (const [B, strategy] of plan) {
    const req: GenerationParams = strategy === 'sample' ? { do_sample: true, temperature: 0.8, top_p: 0.9 } : {};
    const v = await CompiledVariant.compile(model, { model: model.name, P, N, strategy }, B);
    const [p0, r0] = [pipelinesAfterWarmup(), retraces()];
    let [tokens, decodeMs, prefillMs, steps, wallMs] = [0, 0, 0, 0, 0];
    const hash = createHash('sha1');
    for (let run = 0; run < runs; run++) {
      t0 = performance.now();
      const res = await v.run(rowsFor(B, req, run));
      wallMs += performance.now() - t0;
      for (const r of res) hash.update(`${r.tokenIds.join(',')};`);
      tokens += res.reduce((n, r) => n + r.tokenIds.length, 0);
      decodeMs += v.lastRun.decodeMs;
      prefillMs += v.lastRun.prefillMs;
      steps += v.lastRun.steps;
    }
    results.push({
      B,
      strategy,
      compile_s: +(v.compileMs / 1000).toFixed(2),
      pipelines_in_warmup: v.warmupPipelines.count,
      pipeline_create_s_in_warmup: +(v.warmupPipelines.ms / 1000).toFixed(2),
      ms_per_step: +(decodeMs / steps).toFixed(2),
      prefill_ms: +(prefillMs / runs).toFixed(1),
      tokens_per_s: +((tokens / wallMs) * 1000).toFixed(1),
      pipelines_after_warmup: pipelinesAfterWarmup() - p0,
      retraces_after_warmup: retraces() - r0,
      tokens_sha1: hash.digest('hex').slice(0, 12),
    });
    console.log(JSON.stringify({ variant: results[results.length - 1] }));
    v.dispose();
  }

  const report = {
    backend,
    kernel_provider: kernelProvider(),
    adapter: webgpuAdapter(),
    model: { ...shape, params_millions: +(model.weights.bytes / 4 / 1e6).toFixed(1) },
    P,
    N,
    runs_per_variant: runs,
    make_model_s: +(makeMs / 1000).toFixed(1),
    load_s: +(loadMs / 1000).toFixed(1),
    results,
    summary: {
      retraces: retraces(),
      pipelines_after_warmup: pipelinesAfterWarmup(),
      pipelines_total: pipelineStats().created,
      pipeline_create_s_total: +(pipelineStats().ms / 1000).toFixed(2),
      tensors_live_with_weights: tf.memory().numTensors,
      wall_s: +((performance.now() - t00) / 1000).toFixed(1),
    },
    when: new Date().toISOString(),
  };
  console.log(
    `backend ${backend} (${report.kernel_provider}) · ${shape.layers} layers × ${shape.embd}, vocab ${V} · P=${P} N=${N} · ` +
      `pipelines ${report.summary.pipelines_total}, after warm-up ${report.summary.pipelines_after_warmup} · retraces ${report.summary.retraces}`,
  );
  console.table(results);
  const out = process.env.GPU_OUT ?? `bench/results/gpu-${backend}.json`;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(JSON.stringify({ summary: report.summary }));
  console.log(`wrote ${out}`);
  model.dispose();
  if (own) rmSync(dir, { recursive: true, force: true });
}

await main();
