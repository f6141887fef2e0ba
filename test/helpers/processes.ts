/** Worker processes and CLI runs for integration tests: `node dist/src/cli/main.js ...`. */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnWorker as spawnLocalWorker, type WorkerProcess } from '../../src/local/worker-process.js';

export { WorkerProcess, type LogLine } from '../../src/local/worker-process.js';

/** The project root (tests run from dist/test). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

/** A worker process with env as the fourth argument (the tests' shorthand for src/local's options). */
export function spawnWorker(redisUrl: string, models: string[], extra: string[] = [], env: Record<string, string> = {}): WorkerProcess {
  return spawnLocalWorker(redisUrl, models, extra, { env });
}

/** Runs a CLI command to its end. */
export function runCli(
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
    env: { ...process.env, ...opts.env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** A tiny random GPT-2 folder, made once per path. */
export function ensureTinyModel(
  dir: string,
  opts: { layers?: number; embd?: number; heads?: number; positions?: number; seed?: number } = {},
): string {
  if (existsSync(join(dir, 'model.safetensors'))) return dir;
  mkdirSync(dirname(dir), { recursive: true });
  const r = runCli([
    'make-model',
    '--out',
    dir,
    '--layers',
    String(opts.layers ?? 2),
    '--heads',
    String(opts.heads ?? 2),
    '--embd',
    String(opts.embd ?? 64),
    '--positions',
    String(opts.positions ?? 128),
    '--seed',
    String(opts.seed ?? 1),
  ]);
  if (r.code !== 0) throw new Error(`make-model failed: ${r.stderr}`);
  return dir;
}
