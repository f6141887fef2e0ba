/**
 * The compiler tests that guard correctness (parity with the float64 reference, invariance, KV cache,
 * beams, leaks, retraces, the Llama family) run again under the other kernel provider: this file runs under the
 * default (native when the addon is built), and runs those files in child processes with
 * BATCHGEN_KERNELS set to the other one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, kernelsInfo } from '../../src/compiler/index.js';
import { loadAddon } from '../../src/compiler/native/addon.js';

const FILES = ['parity', 'invariance', 'kv-cache', 'beam', 'leaks', 'retrace', 'llama'];
const here = dirname(fileURLToPath(import.meta.url));
const backend = await initBackend();
const other = kernelsInfo().kernels === 'native' ? 'stock' : 'native';
const { addon, reason } = loadAddon();
const skip = backend !== 'wasm' ? `backend ${backend} has one kernel provider` : addon === null ? `no native kernels: ${reason}` : false;

for (const name of FILES) {
  test(`${name}.test under BATCHGEN_KERNELS=${other}`, { skip }, () => {
    // NODE_TEST_CONTEXT would make the child report to this runner instead of printing TAP.
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', join(here, `${name}.test.js`)], {
      env: { ...env, BATCHGEN_KERNELS: other },
      encoding: 'utf8',
      timeout: 300_000,
    });
    const tail = `${r.stdout}\n${r.stderr}`.split('\n').slice(-40).join('\n');
    assert.equal(r.status, 0, tail);
    assert.match(r.stdout, /# fail 0/);
    assert.doesNotMatch(r.stdout, /# pass 0\b/);
  });
}
