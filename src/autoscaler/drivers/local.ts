/**
 * The `local` driver: workers are `batchgen worker --assigned --id <id>` processes on this machine
 * (src/local/worker-process.ts). A plan's `start` spawns one with its planned id; `stop` sends it
 * SIGTERM, on which the worker stops taking jobs, finishes the batch in hand and exits. Exited
 * processes are reaped (and logged) as they exit; close() stops every one still running and waits.
 */
import type { Writable } from 'node:stream';
import { componentLogger, type Logger } from '../../observability/logger.js';
import { WorkerProcess } from '../../local/worker-process.js';
import type { ClusterState, Plan } from '../types.js';
import type { Driver, DriverContext } from './driver.js';

export interface LocalDriverOptions extends DriverContext {
  /**
   * Where the workers' log lines (JSON, one a line) are copied.
   * @defaultValue `process.stderr`
   */
  workerLogs?: Writable | null;
  /**
   * After SIGTERM, a worker still running after this long (ms) gets SIGKILL at close().
   * @defaultValue `120_000` (the worker's own forced exit)
   */
  stopGraceMs?: number;
  /**
   * Extra environment of the workers.
   * @defaultValue none
   */
  env?: Record<string, string>;
  /**
   * @defaultValue a `driver` child of the root logger
   */
  logger?: Logger;
}

/** The arguments of one worker process (after `batchgen worker`). */
export function workerArgs(ctx: DriverContext, id: string): string[] {
  return [
    '--assigned',
    '--id',
    id,
    ...ctx.models.flatMap((m) => ['--model', m]),
    '--redis',
    ctx.redisUrl,
    '--prefix',
    ctx.prefix,
    ...ctx.workerArgs,
  ];
}

/** Worker log lines kept per process (the rest are copied to workerLogs only). */
const KEEP_LOG_LINES = 200;
/** Lifetimes of worker processes kept (the most recent ones). */
const KEEP_LIFETIMES = 1000;

/** One worker process this driver started: when (ms since the epoch) it was spawned, and reaped (null while it runs). */
export interface WorkerLifetime {
  id: string;
  pid: number;
  startedAt: number;
  exitedAt: number | null;
}

export class LocalDriver implements Driver {
  readonly name = 'local';
  private readonly procs = new Map<string, WorkerProcess>();
  private readonly stopping = new Set<string>();
  private readonly spans: WorkerLifetime[] = [];
  private readonly log: Logger;
  private readonly stopGraceMs: number;
  private closing: Promise<void> | null = null;

  constructor(private readonly opts: LocalDriverOptions) {
    this.log = opts.logger ?? componentLogger('driver', { driver: 'local' });
    this.stopGraceMs = opts.stopGraceMs ?? 120_000;
    if (!(this.stopGraceMs >= 0)) throw new Error(`stopGraceMs must be ≥ 0, got ${this.stopGraceMs}`);
  }

  async apply(plan: Plan, _state: ClusterState): Promise<void> {
    if (this.closing) return;
    for (const w of plan.workers) {
      if (w.action === 'start' && !this.procs.has(w.id)) this.start(w.id);
      else if (w.action === 'stop') this.stop(w.id);
    }
  }

  async running(): Promise<string[]> {
    return [...this.procs.keys()];
  }

  /** The worker processes it started (the last 1000), oldest first: worker-seconds for the benchmarks. */
  lifetimes(): WorkerLifetime[] {
    return this.spans.map((s) => ({ ...s }));
  }

  /** The process of a worker this driver runs (tests and the demo). */
  process(id: string): WorkerProcess | undefined {
    return this.procs.get(id);
  }

  private start(id: string): void {
    const p = new WorkerProcess(workerArgs(this.opts, id), {
      env: this.opts.env,
      tee: this.opts.workerLogs === null ? undefined : (this.opts.workerLogs ?? process.stderr),
      keepLines: KEEP_LOG_LINES,
    });
    this.procs.set(id, p);
    const span: WorkerLifetime = { id, pid: p.pid, startedAt: Date.now(), exitedAt: null };
    this.spans.push(span);
    if (this.spans.length > KEEP_LIFETIMES) this.spans.splice(0, this.spans.length - KEEP_LIFETIMES);
    this.log.info({ worker: id, pid: p.pid }, 'worker started');
    void p.exited.then(({ code, signal }) => {
      span.exitedAt = Date.now();
      this.procs.delete(id);
      const asked = this.stopping.delete(id);
      const fields = { worker: id, pid: p.pid, code, signal };
      if (asked && code === 0) this.log.info(fields, 'worker stopped');
      else this.log.warn(fields, asked ? 'worker stopped with an error' : 'worker exited without being asked to');
    });
  }

  /** SIGTERM once: the worker drains the batch in hand and exits (reaped then). */
  private stop(id: string): void {
    const p = this.procs.get(id);
    if (!p || this.stopping.has(id)) return;
    this.stopping.add(id);
    this.log.info({ worker: id, pid: p.pid }, 'stopping worker (SIGTERM: it finishes the batch in hand)');
    p.signal('SIGTERM');
  }

  /** Stops every worker and waits for them to exit (SIGKILL after stopGraceMs). Safe twice. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const all = [...this.procs];
      for (const [id] of all) this.stop(id);
      // one SIGTERM only: a second one makes the worker exit at once, without finishing its batch
      await Promise.all(
        all.map(async ([id, p]) => {
          const t = setTimeout(() => {
            this.log.warn({ worker: id, pid: p.pid, graceMs: this.stopGraceMs }, 'worker still running after the grace time: SIGKILL');
            p.signal('SIGKILL');
          }, this.stopGraceMs);
          await p.exited;
          clearTimeout(t);
        }),
      );
    })();
    return this.closing;
  }
}

/** The driver factory (see DriverFactory). */
export const createDriver = (ctx: DriverContext): Driver => new LocalDriver(ctx);
