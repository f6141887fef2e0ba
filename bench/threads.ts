/**
 * `npm run bench:threads`: one process with N native threads against N processes with one thread
 * each, on the same work (GPT-2-small-shaped random weights, P=64, N=32, greedy, B rows a batch),
 * started together after their warm-ups. Prints a table, writes bench/results/threads.json.
 *
 * Env: BENCH_PROCS (N, default 2), BENCH_B (8), BENCH_BATCHES_EACH (2 batches per process; the
 * one-process run does N times as many), BENCH_LAYERS/EMBD/HEADS to shrink.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CompiledVariant, kernelsInfo, loadModel, makeModel } from '../src/compiler/index.js';
import { resolveParams } from '../src/shared/params.js';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const P = 64;
const N = 32;
const B = env('BENCH_B', 8);

async function child(dir: string, batches: number): Promise<void> {
  const model = await loadModel(dir, 'gpt2-shaped');
  const v = await CompiledVariant.compile(model, { model: model.name, P, N, strategy: 'greedy' }, B);
  const greedy = resolveParams({ max_new_tokens: N, do_sample: false }, { ...model.defaults, eos_token_id: [] });
  const rows = Array.from({ length: B }, (_, i) => ({
    promptIds: Array.from({ length: 33 + ((i * 13) % 32) }, (_, j) => (i * 977 + j * 31) % 50000),
    params: greedy,
  }));
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));
  const t0 = performance.now();
  let tokens = 0;
  for (let i = 0; i < batches; i++) tokens += (await v.run(rows)).reduce((n, r) => n + r.tokenIds.length, 0);
  const k = kernelsInfo();
  const line = `${JSON.stringify({ tokens, ms: performance.now() - t0, kernels: k.kernels, threads: k.threads })}\n`;
  v.dispose();
  model.dispose();
  process.stdout.write(line, () => process.exit(0)); // stdin would keep this process alive
}

/** Starts `procs` children with `threads` threads each, lets them go together, returns tokens/s. */
async function run(dir: string, procs: number, threads: number, batches: number) {
  const kids = Array.from({ length: procs }, () =>
    spawn(process.execPath, [fileURLToPath(import.meta.url), '--child', dir, String(batches)], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { ...process.env, BATCHGEN_THREADS: String(threads) },
    }),
  );
  const lines = kids.map((k) => {
    const got: string[] = [];
    let buf = '';
    let wake: (() => void) | null = null;
    k.stdout.setEncoding('utf8');
    k.stdout.on('data', (d: string) => {
      buf += d;
      let i = buf.indexOf('\n');
      while (i >= 0) {
        got.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
        i = buf.indexOf('\n');
      }
      wake?.();
    });
    return async () => {
      while (got.length === 0) await new Promise<void>((r) => (wake = r));
      return JSON.parse(got.shift()!);
    };
  });
  await Promise.all(lines.map((l) => l())); // ready
  for (const k of kids) k.stdin.write('go\n');
  const res = (await Promise.all(lines.map((l) => l()))) as { tokens: number; ms: number; kernels: string; threads: number }[];
  const tokens = res.reduce((n, r) => n + r.tokens, 0);
  const ms = Math.max(...res.map((r) => r.ms));
  return {
    processes: procs,
    threads_each: threads,
    kernels: res[0].kernels,
    B,
    tokens,
    wall_ms: Math.round(ms),
    tokens_per_s: +((tokens / ms) * 1000).toFixed(1),
  };
}

async function main(): Promise<void> {
  const procs = env('BENCH_PROCS', 2);
  const each = env('BENCH_BATCHES_EACH', 2);
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-threads-'));
  const [layers, embd, heads] = [env('BENCH_LAYERS', 12), env('BENCH_EMBD', 768), env('BENCH_HEADS', 12)];
  await makeModel({ out: dir, layers, heads, embd, positions: 1024, seed: 1 });
  const rows = [await run(dir, 1, procs, each * procs), await run(dir, procs, 1, each), await run(dir, 1, 1, each)];
  console.table(rows);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(
    'bench/results/threads.json',
    `${JSON.stringify({ model: { layers, embd, heads }, P, N, rows, when: new Date().toISOString() }, null, 2)}\n`,
  );
  console.log('wrote bench/results/threads.json');
  rmSync(dir, { recursive: true, force: true });
}

if (process.argv[2] === '--child') await child(process.argv[3], Number(process.argv[4]));
else await main();
