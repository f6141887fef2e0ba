/**
 * The in-process side of the system benchmark: the same rows as the queue path, run by the compiler
 * in this one process (no Redis), with the same batch sizes. Variants are compiled and warmed first
 * and not timed. Usage: node dist/bench/system-inprocess.js MODEL_DIR ROWS.json [--wait-go]  → JSON on stdout
 * (--wait-go: print {"ready":true} after warm-up, start timing on a line on stdin).
 */
import { readFileSync } from 'node:fs';
import { generateRows, loadModel, retraces, VariantCache } from '../src/compiler/index.js';
import type { RowRequest } from '../src/compiler/types.js';
import { parseKeyId } from '../src/shared/compile-key.js';

const [dir, rowsFile] = process.argv.slice(2);
const input = JSON.parse(readFileSync(rowsFile, 'utf8')) as { name: string; keys: string[]; rows: RowRequest[]; sizes: number[] };
const model = await loadModel(dir, input.name);
const cache = new VariantCache({ budgetBytes: 8 * 1024 ** 3 });
const tw = performance.now();
for (const k of input.keys) for (const B of input.sizes) await cache.get(model, parseKeyId(k), B);
const warmMs = performance.now() - tw;
if (process.argv.includes('--wait-go')) {
  // several of these run side by side: start together
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
}
const t0 = performance.now();
const out = await generateRows(model, input.rows, { cache, batchSizes: input.sizes });
const ms = performance.now() - t0;
const tokens = out.reduce((s, r) => s + r.tokenIds.length, 0);
process.stdout.write(
  JSON.stringify({ ms, warmMs, tokens, retraces: retraces(), compiles: cache.stats().compiles, tokenIds: out.map((r) => r.tokenIds) }) +
    '\n',
);
