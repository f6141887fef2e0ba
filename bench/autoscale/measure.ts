/**
 * The real engine's numbers for the autoscaling benchmarks: per key shape, the seconds to compile
 * every batch size (as a worker does when it takes a key) and the seconds of one batch at each size.
 */
import { CompiledVariant, type LoadedModel } from '../../src/compiler/index.js';
import { resolveParams } from '../../src/shared/params.js';

export interface Measured {
  shape: string;
  P: number;
  N: number;
  compile_s: number;
  /** seconds per batch at each size */
  batch_s: Record<number, number>;
  jobs_per_s_b8: number;
  jobs_per_s_b1: number;
}

/** Compile every batch size (1 and 8 among them) of each (P, N) shape, greedy; time `reps` batches of each after one warm run. */
export async function measureShapes(model: LoadedModel, shapes: [number, number][], sizes = [1, 2, 4, 8], reps = 3): Promise<Measured[]> {
  const out: Measured[] = [];
  for (const [P, N] of shapes) {
    const params = resolveParams({ max_new_tokens: N, do_sample: false }, { ...model.defaults, eos_token_id: [] });
    const batch_s: Record<number, number> = {};
    let compileMs = 0;
    for (const B of sizes) {
      let t0 = performance.now();
      const v = await CompiledVariant.compile(model, { model: model.name, P, N, strategy: 'greedy' }, B);
      compileMs += performance.now() - t0;
      const rows = Array.from({ length: B }, (_, i) => ({
        promptIds: Array.from({ length: P - (i % 4) }, (_, j) => (i * 977 + j * 31) % 50000),
        params,
      }));
      await v.run(rows);
      t0 = performance.now();
      for (let r = 0; r < reps; r++) await v.run(rows);
      batch_s[B] = (performance.now() - t0) / reps / 1000;
      v.dispose();
    }
    out.push({
      shape: `p${P}:n${N}:greedy`,
      P,
      N,
      compile_s: compileMs / 1000,
      batch_s,
      jobs_per_s_b8: 8 / batch_s[8],
      jobs_per_s_b1: 1 / batch_s[1],
    });
  }
  return out;
}
