/**
 * `npm run bench:layouts`: each native weight layout (oneDNN on the weight as stored, oneDNN on a
 * transposed copy, the addon's 8-column panels) on the matmul shapes of GPT-2 small's decode steps,
 * through the engine's own kernels, with weights from memory as in a step (12 distinct weights per
 * shape, run in turn: 28 to 460 MB, more than the caches). Prints a table, writes
 * bench/results/layouts.json. Env: BENCH_ROWS (default 1,8,16,32).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { initBackend, tf, useKernels } from '../src/compiler/index.js';
import { loadAddon } from '../src/compiler/native/addon.js';
import { markConstants } from '../src/compiler/native/provider.js';

const rowsList = (process.env.BENCH_ROWS ?? '1,8,16,32').split(',').map(Number);
const SHAPES: [string, number, number][] = [
  ['q, k, v, proj', 768, 768],
  ['mlp up', 768, 3072],
  ['mlp down', 3072, 768],
  ['lm head', 768, 50257],
];
const LAYOUTS = ['stored', 'transposed', 'panels'] as const;

function msPerMatmul(x: tf.Tensor2D, ws: tf.Tensor2D[], bias: tf.Tensor1D): number {
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    for (const w of ws) {
      // read back outside tf.tidy: a typed array returned from tidy is walked element by element
      const out = tf.fused.matMul({ a: x, b: w, bias });
      out.dataSync();
      out.dispose();
    }
    runs.push((performance.now() - t0) / ws.length);
  }
  return runs.sort((a, b) => a - b)[2];
}

async function main(): Promise<void> {
  await initBackend('wasm');
  const { addon, reason } = loadAddon();
  if (addon === null) throw new Error(`native kernels not available: ${reason}`);
  useKernels('native');
  const rows: Record<string, unknown>[] = [];
  for (const [name, K, N] of SHAPES) {
    const count = N > 10000 ? 3 : 12; // the lm head is 154 MB alone
    const ws = Array.from({ length: count }, (_, i) => tf.randomNormal([K, N], 0, 0.02, 'float32', i) as tf.Tensor2D);
    const bias = tf.zeros([N]) as tf.Tensor1D;
    markConstants(ws);
    for (const M of rowsList) {
      const x = tf.randomNormal([M, K], 0, 1, 'float32', 99) as tf.Tensor2D;
      const ms: Record<string, number> = {};
      for (const layout of LAYOUTS) {
        process.env.BATCHGEN_NATIVE_LAYOUT = layout;
        msPerMatmul(x, ws, bias); // packs, primitives
        ms[layout] = msPerMatmul(x, ws, bias);
      }
      delete process.env.BATCHGEN_NATIVE_LAYOUT;
      const gflops = (t: number) => +((2 * M * K * N) / t / 1e6).toFixed(1);
      const bestOneDnn = Math.min(ms.stored, ms.transposed);
      rows.push({
        shape: `${name} [${M}, ${K}] x [${K}, ${N}]`,
        M,
        stored_gflops: gflops(ms.stored),
        transposed_gflops: gflops(ms.transposed),
        panels_gflops: gflops(ms.panels),
        panels_over_best_onednn: +(bestOneDnn / ms.panels).toFixed(2),
        weights_gbs_panels: +((4 * K * N) / ms.panels / 1e6).toFixed(1),
      });
      x.dispose();
    }
    tf.dispose([...ws, bias]);
  }
  const readGBs = +addon.readBandwidth().toFixed(1);
  console.table(rows);
  console.log(`memory read, one thread: ${readGBs} GB/s (${addon.version()})`);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(
    'bench/results/layouts.json',
    `${JSON.stringify({ rows, memory_read_gbs: readGBs, when: new Date().toISOString() }, null, 2)}\n`,
  );
  console.log('wrote bench/results/layouts.json');
}

await main();
