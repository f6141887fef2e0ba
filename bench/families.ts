/**
 * The Llama-family rows of `npm run bench`: compiled variants of a SmolLM2-135M-shaped model (30
 * layers, hidden 576, 9 heads, 3 KV heads, MLP 1536, vocabulary 49152, tied) at B=1, 8 and 16, and
 * a Qwen2.5-0.5B-shaped one (24 layers, hidden 896, 14 heads, 2 KV heads, MLP 4864, vocabulary
 * 151936, tied) at B=8; random weights, P=64, N=32 greedy, one batch of B requests per row.
 *
 * Env: BENCH_FAMILIES=0 skips them; BENCH_FAMILY_BATCHES (default 1,8,16) for the SmolLM2 shape.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CompiledVariant, loadModel, makeModel } from '../src/compiler/index.js';
import type { MakeModelOptions } from '../src/compiler/make-model.js';
import { ModelFormatError } from '../src/shared/errors.js';
import { resolveParams } from '../src/shared/params.js';

const P = 64;
const N = 32;

interface Shape {
  label: string;
  opts: Omit<MakeModelOptions, 'out'>;
  batches: number[];
}

export const FAMILY_SHAPES: Shape[] = [
  {
    label: 'SmolLM2-135M shape (llama)',
    opts: { arch: 'llama', layers: 30, embd: 576, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49152, positions: 2048, tied: true },
    batches: (process.env.BENCH_FAMILY_BATCHES ?? '1,8,16').split(',').map(Number),
  },
  {
    label: 'Qwen2.5-0.5B shape (qwen2)',
    opts: { arch: 'qwen2', layers: 24, embd: 896, heads: 14, kvHeads: 2, intermediate: 4864, vocab: 151936, positions: 32768, tied: true },
    batches: [8],
  },
];

/** One table row per (shape, B), with the columns of the GPT-2 rows, under the kernels in use now. */
export async function familyRows(kernels: string): Promise<Record<string, unknown>[]> {
  if (process.env.BENCH_FAMILIES === '0') return [];
  const rows: Record<string, unknown>[] = [];
  for (const shape of FAMILY_SHAPES) {
    const dir = mkdtempSync(join(tmpdir(), 'batchgen-bench-family-'));
    try {
      await makeModel({ ...shape.opts, seed: 1, out: dir });
      const t0 = performance.now();
      let model: Awaited<ReturnType<typeof loadModel>>;
      try {
        model = await loadModel(dir, 'family');
      } catch (e) {
        // Too big for this backend (the wasm heap): say so in the table instead of a number.
        if (!(e instanceof ModelFormatError)) throw e;
        rows.push({
          what: `${shape.label} B=${shape.batches.join(',')}`,
          refused: e.message.replace(/^.*config\.json: /, '').slice(0, 120),
        });
        continue;
      }
      const loadMs = performance.now() - t0;
      const greedy = resolveParams({ max_new_tokens: N, do_sample: false }, { ...model.defaults, eos_token_id: [] });
      for (const B of shape.batches) {
        const t1 = performance.now();
        const v = await CompiledVariant.compile(model, { model: model.name, P, N, strategy: 'greedy' }, B);
        const compileMs = performance.now() - t1;
        const reqs = Array.from({ length: B }, (_, i) => ({
          promptIds: Array.from({ length: 33 + ((i * 13) % 32) }, (_, j) => (i * 977 + j * 31) % 40000),
          params: greedy,
        }));
        const t2 = performance.now();
        const res = await v.run(reqs);
        const wallMs = performance.now() - t2;
        const tokens = res.reduce((n, r) => n + r.tokenIds.length, 0);
        rows.push({
          what: `${shape.label} B=${B}`,
          kernels,
          B,
          params_m: +(model.folder.arch.params / 1e6).toFixed(1),
          load_ms: Math.round(loadMs),
          compile_ms: Math.round(compileMs),
          prefill_ms: Math.round(v.lastRun.prefillMs),
          decode_ms_per_step: +(v.lastRun.decodeMs / v.lastRun.steps).toFixed(1),
          tokens_per_s: +((tokens / wallMs) * 1000).toFixed(1),
          requests: B,
        });
        v.dispose();
      }
      model.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  return rows;
}
