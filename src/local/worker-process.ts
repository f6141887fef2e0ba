/**
 * A `batchgen worker` child process on this machine, with its JSON log lines parsed as they come:
 * what `batchgen demo`, the system benchmark and the integration tests start.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

/** The CLI entry point, beside this module in the build. */
export const CLI_MAIN = fileURLToPath(new URL('../cli/main.js', import.meta.url));

export interface LogLine {
  msg?: string;
  level?: number;
  [k: string]: unknown;
}

export interface WorkerProcessOptions {
  /** Extra environment; BATCHGEN_LOG_LEVEL defaults to `info`. */
  env?: Record<string, string>;
  /** Also copy every stderr line here (a log file). */
  tee?: Writable;
  /** Keep only the last this many lines in `logs` and `stderr` (a long-lived process). Default: all. */
  keepLines?: number;
}

export class WorkerProcess {
  readonly proc: ChildProcess;
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = [];
  private readonly keepLines: number;

  /** Starts `batchgen worker ARGS...`. */
  constructor(args: string[], opts: WorkerProcessOptions = {}) {
    this.keepLines = opts.keepLines ?? Infinity;
    this.proc = spawn(process.execPath, [CLI_MAIN, 'worker', ...args], {
      env: { ...process.env, BATCHGEN_LOG_LEVEL: 'info', ...opts.env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let buf = '';
    this.proc.stderr!.setEncoding('utf8');
    if (opts.tee) this.proc.stderr!.pipe(opts.tee, { end: false });
    this.proc.stderr!.on('data', (d: string) => {
      buf += d;
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        this.onLine(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
  }

  private onLine(line: string): void {
    this.stderr.push(line);
    if (this.stderr.length > this.keepLines) this.stderr.splice(0, this.stderr.length - this.keepLines);
    let parsed: LogLine;
    try {
      parsed = JSON.parse(line) as LogLine;
    } catch {
      return;
    }
    this.logs.push(parsed);
    if (this.logs.length > this.keepLines) this.logs.splice(0, this.logs.length - this.keepLines);
    this.waiters = this.waiters.filter((w) => {
      if (!w.pred(parsed)) return true;
      w.resolve(parsed);
      return false;
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Resolves with the first log line (past or future) that matches; rejects on timeout or exit. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 60_000): Promise<LogLine> {
    const found = this.logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no matching log line within ${timeoutMs} ms; last lines:\n${this.stderr.slice(-8).join('\n')}`)),
        timeoutMs,
      );
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
    if (this.running) this.proc.kill(sig);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once exited. */
  async stop(graceMs = 20_000): Promise<void> {
    if (!this.running) return;
    this.signal('SIGTERM');
    const t = setTimeout(() => this.signal('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

/** `batchgen worker --redis URL --model M ... EXTRA...`. */
export function spawnWorker(redisUrl: string, models: string[], extra: string[] = [], opts: WorkerProcessOptions = {}): WorkerProcess {
  return new WorkerProcess(['--redis', redisUrl, ...models.flatMap((m) => ['--model', m]), ...extra], opts);
}
