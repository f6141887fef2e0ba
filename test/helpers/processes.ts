/** Worker processes and CLI runs for integration tests: `node dist/src/cli/main.js ...`. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The project root (tests run from dist/test). */
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');

export interface LogLine {
  msg?: string;
  level?: number;
  [k: string]: unknown;
}

export class WorkerProcess {
  readonly proc: ChildProcess;
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];

  constructor(args: string[], env: Record<string, string> = {}) {
    this.proc = spawn(process.execPath, [MAIN, 'worker', ...args], {
      env: { ...process.env, BATCHGEN_LOG_LEVEL: 'info', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let buf = '';
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.stderr.push(line);
        let parsed: LogLine | null = null;
        try {
          parsed = JSON.parse(line) as LogLine;
        } catch {
          continue;
        }
        this.logs.push(parsed);
        this.waiters = this.waiters.filter((w) => {
          if (w.pred(parsed!)) {
            w.resolve(parsed!);
            return false;
          }
          return true;
        });
      }
    });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Resolves with the first log line (past or future) that matches. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 60_000): Promise<LogLine> {
    const found = this.logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${timeoutMs} ms; last lines:\n${this.stderr.slice(-8).join('\n')}`)), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
      void this.exited.then(() => {
        // a worker that exits can still have printed the line just before
        setTimeout(() => {
          clearTimeout(timer);
          reject(new Error(`worker exited before the log line; last lines:\n${this.stderr.slice(-8).join('\n')}`));
        }, 200);
      });
    });
  }

  waitForMsg(msg: string, timeoutMs?: number): Promise<LogLine> {
    return this.waitForLog((l) => l.msg === msg, timeoutMs);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(sig);
  }

  /** SIGTERM, then SIGKILL after a while; resolves once exited. */
  async stop(graceMs = 20_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.signal('SIGTERM');
    const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

export function spawnWorker(redisUrl: string, models: string[], extra: string[] = [], env: Record<string, string> = {}): WorkerProcess {
  return new WorkerProcess(['--redis', redisUrl, ...models.flatMap((m) => ['--model', m]), ...extra], env);
}

/** Runs a CLI command to its end. */
export function runCli(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
    env: { ...process.env, ...opts.env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** A tiny random GPT-2 folder, made once per path. */
export function ensureTinyModel(dir: string, opts: { layers?: number; embd?: number; heads?: number; positions?: number; seed?: number } = {}): string {
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
