/**
 * `npm run bench:kv-write`: the KV cache's decode-step write, per step over all layers, on the
 * backend BATCHGEN_BACKEND gives: the functional `where` copy (a new cache per layer and step)
 * against the backend's own write (the slot shader on webgpu, host memory on wasm and cpu), at
 * GPT-2-small cache shapes. Each timing ends with a readback of the last cache written, so that an
 * asynchronous backend has done the work. Prints a table, writes JSON.
 *
 * Env: KV_LAYERS/KV_HEADS/KV_HEAD_DIM (12/12/64), KV_LENGTH (96 = P 64 + N 32), KV_ROWS (1,8,32),
 * KV_STEPS (20), KV_OUT (bench/results/kv-write-<backend>.json).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { initBackend, tf, type BackendName } from '../../src/compiler/index.js';
import { KvCache } from '../../src/compiler/kv-cache.js';

const num = (k: string, d: number) => Number(process.env[k] ?? d);

async function msPerStep(writes: 'own' | 'functional', R: number, L: number, H: number, T: number, D: number, steps: number) {
  if (writes === 'functional') process.env.BATCHGEN_CACHE_WRITES = 'functional';
  const cache = new KvCache(L, R, H, T, D);
  delete process.env.BATCHGEN_CACHE_WRITES;
  const k = tf.randomNormal([R, H * D]);
  const v = tf.randomNormal([R, H * D]);
  const step = (s: number) => tf.tidy(() => Array.from({ length: L }, (_, i) => cache.writeStep(i, s % T, k, v)));
  const finish = async () => void (await cache.layer(L - 1).k.data());
  for (let s = 0; s < 3; s++) step(s);
  await finish();
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) step(s);
  await finish();
  const ms = (performance.now() - t0) / steps;
  const kind = cache.writes;
  tf.dispose([k, v]);
  cache.dispose();
  return { ms, kind };
}

async function main(): Promise<void> {
  const backend = await initBackend(process.env.BATCHGEN_BACKEND as BackendName | undefined);
  const [L, H, D, T, steps] = [
    num('KV_LAYERS', 12),
    num('KV_HEADS', 12),
    num('KV_HEAD_DIM', 64),
    num('KV_LENGTH', 96),
    num('KV_STEPS', 20),
  ];
  const rows: Record<string, unknown>[] = [];
  for (const R of (process.env.KV_ROWS ?? '1,8,32').split(',').map(Number)) {
    const own = await msPerStep('own', R, L, H, T, D, steps);
    const copy = await msPerStep('functional', R, L, H, T, D, steps);
    rows.push({
      rows: R,
      cache_mib_per_layer: +((2 * R * H * T * D * 4) / 2 ** 20).toFixed(2),
      own_write: own.kind,
      own_ms_per_step: +own.ms.toFixed(3),
      where_copy_ms_per_step: +copy.ms.toFixed(3),
      where_over_own: +(copy.ms / own.ms).toFixed(1),
    });
  }
  console.log(`backend ${backend} · KV cache write per decode step, ${L} layers × [R, ${H}, ${T}, ${D}] keys and values`);
  console.table(rows);
  const out = process.env.KV_OUT ?? `bench/results/kv-write-${backend}.json`;
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ backend, layers: L, heads: H, length: T, head_dim: D, steps, rows, when: new Date().toISOString() }, null, 2)}\n`,
  );
  console.log(`wrote ${out}`);
}

await main();
