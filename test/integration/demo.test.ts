/** `batchgen demo`: runs end to end on its own private Redis and cleans up; a clear message without redis-server. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hasRedisServer } from '../helpers/redis-server.js';
import { runCli } from '../helpers/processes.js';

test('demo: private Redis, random model, two workers, summary, cleanup', {
  skip: !hasRedisServer() && 'redis-server is not installed',
  timeout: 300_000,
}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-demo-test-'));
  const before = new Set(readdirSync(tmpdir()).filter((f) => f.startsWith('batchgen-demo-') && !f.startsWith('batchgen-demo-test-')));
  try {
    const out = join(dir, 'results.jsonl');
    const env: Record<string, string> = { BATCHGEN_LOG_LEVEL: 'warn' };
    const saved = process.env.REDIS_URL;
    delete process.env.REDIS_URL;
    const r = runCli(['demo', '--requests', '40', '--out', out], { env, timeoutMs: 280_000 });
    if (saved !== undefined) process.env.REDIS_URL = saved;
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stderr, /redis-server started on port \d+/);
    assert.match(r.stdout, /40 completed, 0 failed/);
    assert.match(r.stdout, /retraces after warm-up: 0/);
    assert.match(r.stdout, /tokens\/s/);
    assert.match(r.stdout, /padding waste/);
    assert.match(r.stdout, new RegExp(`results: 40 lines in ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    assert.equal(lines.length, 40);
    // the demo's temporary folder (model, redis dir, logs) is gone
    const after = readdirSync(tmpdir()).filter(
      (f) => f.startsWith('batchgen-demo-') && !f.startsWith('batchgen-demo-test-') && !before.has(f),
    );
    assert.deepEqual(after, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('demo without redis-server on the PATH says how to get it', () => {
  const saved = process.env.REDIS_URL;
  delete process.env.REDIS_URL;
  const r = runCli(['demo'], { env: { PATH: '/nonexistent' } });
  if (saved !== undefined) process.env.REDIS_URL = saved;
  assert.equal(r.code, 1);
  assert.match(r.stderr, /redis-server is not on the PATH/);
  assert.match(r.stderr, /apt-get install redis-server|brew install redis/);
  assert.match(r.stderr, /REDIS_URL/);
});
