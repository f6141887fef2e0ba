// Without the native addon the engine runs stock kernels and says so, and `npm ci`'s build step
// never fails: `batchgen generate --json` with the addon missing against the default, and the
// install script with no compiler.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeModel } from '../../src/compiler/index.js';
import { loadAddon } from '../../src/compiler/native/addon.js';

const bin = fileURLToPath(new URL('../../../bin/batchgen.js', import.meta.url));
const installScript = fileURLToPath(new URL('../../../native/install.mjs', import.meta.url));
let dir: string;

function generate(env: Record<string, string>) {
  const args = [bin, 'generate', '--model', dir, '--prompt', 'TensorFlow is', '--prompt', 'Hello', '--max-new-tokens', '5', '--json'];
  const { BATCHGEN_KERNELS: _, ...base } = process.env;
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 120_000, env: { ...base, ...env } });
  assert.equal(r.status, 0, r.stderr);
  const meta = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l).meta)[0];
  const tokens = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l).token_ids);
  return { meta, tokens };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'batchgen-kernel-fallback-'));
  await makeModel({ out: dir, layers: 2, heads: 2, embd: 32, positions: 128, seed: 5 });
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('with the addon missing, generate runs stock kernels, says so, and gives the same tokens', () => {
  const missing = generate({ BATCHGEN_NATIVE_ADDON: join(dir, 'no-such-addon.node') });
  assert.equal(missing.meta.kernels, 'stock');
  assert.equal(missing.meta.library, null);
  const usual = generate({});
  assert.equal(usual.meta.kernels, loadAddon().addon ? 'native' : 'stock');
  if (usual.meta.kernels === 'native') assert.match(usual.meta.library, /^oneDNN \d/);
  assert.deepEqual(missing.tokens, usual.tokens);
});

test('BATCHGEN_KERNELS=native with the addon missing is an error that says why', () => {
  const r = spawnSync(process.execPath, [bin, 'generate', '--model', dir, '--prompt', 'Hi', '--max-new-tokens', '2'], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, BATCHGEN_KERNELS: 'native', BATCHGEN_NATIVE_ADDON: join(dir, 'none.node') },
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /BATCHGEN_KERNELS=native: addon not built/);
});

test('the install script succeeds, saying why, when there is no compiler', () => {
  const r = spawnSync(process.execPath, [installScript], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, CXX: join(dir, 'no-such-g++') },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /skipped: (no C\+\+ compiler|oneDNN headers not found)/);
});
