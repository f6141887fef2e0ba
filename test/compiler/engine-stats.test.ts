/**
 * The compiler engine's stats report tfjs memory (what batchgen_tfjs_tensors and
 * batchgen_tfjs_memory_bytes show): the live tensors and their bytes, growing with the model and
 * its compiled variants and given back on release.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { makeModel, tf } from '../../src/compiler/index.js';
import { createCompilerEngine } from '../../src/worker/engine.js';
import { SMALL, tempDir } from '../helpers/compiler-fixtures.js';

test('compiler engine stats: tensors and tensor bytes are tf.memory(), growing with the model and the variants', async () => {
  const dir = path.join(tempDir(), 'stats');
  await makeModel({ ...SMALL, vocab: 512, seed: 5, out: dir });
  const engine = await createCompilerEngine();
  const at = () => {
    const s = engine.stats();
    const m = tf.memory();
    assert.deepEqual([s.tensors, s.tensorBytes], [m.numTensors, m.numBytes]);
    return s;
  };
  try {
    const empty = at();
    const model = await engine.loadModel({ name: 'stats', dir });
    const loaded = at();
    assert.ok(loaded.tensors! > empty.tensors! && loaded.tensorBytes! > empty.tensorBytes!, 'the weights are tensors');
    const key = { model: 'stats', P: 16, N: 16, strategy: 'greedy' } as const;
    await engine.compile(model, key, 2);
    const compiled = at();
    assert.ok(compiled.tensors! > loaded.tensors! && compiled.tensorBytes! > loaded.tensorBytes!, 'a variant holds its KV cache');
    await engine.release(key, 2);
    assert.equal(at().tensors, loaded.tensors);
  } finally {
    await engine.dispose();
  }
});
