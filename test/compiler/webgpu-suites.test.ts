/**
 * The compiler's parity, invariance and retrace tests again, and the Llama family's forward, on the webgpu backend: each file in a
 * child process with BATCHGEN_BACKEND=webgpu (the backend is chosen once per process). Patterns
 * leave out what does not depend on the backend (F16/BF16 loading) and invariance's sampling cases,
 * whose full sorts of a 50257-token vocabulary take minutes on a software adapter (webgpu.test.ts
 * has a sampling invariance case on a small vocabulary). Skipped with the
 * reason printed when Dawn finds no adapter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { webgpuSkipReason } from '../helpers/webgpu.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const skip = await webgpuSkipReason();
if (skip) console.log(`# webgpu suites skipped: ${skip}`);

const SUITES: [file: string, pattern: string | null][] = [
  ['parity.test.js', '^(?!F16)'],
  ['invariance.test.js', '^greedy'],
  ['retrace.test.js', null],
  // The Llama family's forward (rotary, grouped-query attention, the KV heads' cache) on webgpu.
  ['llama.test.js', '^(llama41|qwen2): (prefill|decode)'],
];

for (const [file, pattern] of SUITES) {
  test(`${file} passes on webgpu${pattern ? ` (tests matching ${pattern})` : ''}`, { skip }, async () => {
    const args = ['--test', ...(pattern ? [`--test-name-pattern=${pattern}`] : []), path.join(here, file)];
    const env: NodeJS.ProcessEnv = { ...process.env, BATCHGEN_BACKEND: 'webgpu' };
    delete env.NODE_TEST_CONTEXT; // set by the runner of this file: the child would refuse to run files

    const { code, out } = await new Promise<{ code: number; out: string }>((resolve) => {
      execFile(process.execPath, args, { env, timeout: 300_000, maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
        resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
      });
    });
    const passed = Number(/# pass (\d+)/.exec(out)?.[1] ?? 0);
    assert.equal(code, 0, `${file} on webgpu failed:\n${out.slice(-4000)}`);
    assert.ok(passed > 0, `${file} on webgpu ran no test:\n${out.slice(-2000)}`);
    assert.match(out, /# fail 0/);
  });
}
