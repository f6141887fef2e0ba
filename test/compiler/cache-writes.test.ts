// The KV cache has two write paths: in place (wasm, cpu) and functional (`where`, what the tensorflow
// backend takes). The functional one cannot run on its own backend here, so it is forced on wasm
// and must give the same tokens as the in-place one, for every strategy.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { VariantCache, generateRows, loadModel, makeModel, type LoadedModel } from '../../src/compiler/index.js';
import { resolveParams, type GenerationParams } from '../../src/shared/params.js';

let dir: string;
let model: LoadedModel;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'batchgen-cache-writes-'));
  await makeModel({ out: dir, layers: 2, heads: 2, embd: 32, positions: 128, seed: 7 });
  model = await loadModel(dir, 'tiny');
});

after(() => {
  model.dispose();
  rmSync(dir, { recursive: true, force: true });
});

async function run(extra: GenerationParams): Promise<number[][]> {
  const prompts = [[51, 22854, 37535, 318], Array.from({ length: 21 }, (_, i) => 100 + i * 37), [7]];
  const cache = new VariantCache();
  const rows = prompts.map((promptIds) => ({ promptIds, params: resolveParams({ max_new_tokens: 9, ...extra }, model.defaults) }));
  const res = await generateRows(model, rows, { cache });
  await cache.dispose();
  return res.map((r) => r.tokenIds);
}

for (const [name, extra] of [
  ['greedy', { repetition_penalty: 1.3 }],
  ['sample', { do_sample: true, seed: 11, top_p: 0.8, temperature: 0.9 }],
  ['beam3', { num_beams: 3, length_penalty: 0.7 }],
] as [string, GenerationParams][]) {
  test(`functional cache writes equal in-place writes (${name})`, async () => {
    delete process.env.BATCHGEN_CACHE_WRITES;
    const inPlace = await run(extra);
    process.env.BATCHGEN_CACHE_WRITES = 'functional';
    try {
      const functional = await run(extra);
      assert.deepEqual(functional, inPlace);
      assert.equal(inPlace[0].length, 9);
    } finally {
      delete process.env.BATCHGEN_CACHE_WRITES;
    }
  });
}
