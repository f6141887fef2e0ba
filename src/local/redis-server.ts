/**
 * A private redis-server on a free port with a temporary folder: what `batchgen demo`, the
 * benchmarks and the tests start when they need a Redis of their own.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { BatchgenError } from '../shared/errors.js';

export function hasRedisServer(): boolean {
  return spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).status === 0;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface LocalRedis {
  url: string;
  port: number;
  dir: string;
  /** SIGTERM (SIGKILL after 3 s), then the folder is removed. Safe to call twice. */
  stop(): Promise<void>;
  /** Sends a signal to the server (SIGKILL: a crash; SIGSTOP/SIGCONT: a freeze and its end); resolves once a killed one has exited. */
  signal(sig: NodeJS.Signals): Promise<void>;
  /** Starts the server again on the same port and folder (after a kill): its data comes back from the folder's persistence files. */
  restart(): Promise<void>;
}

/**
 * Starts redis-server with no persistence (unless `extraArgs` ask for it) and resolves once it
 * answers PING.
 * @throws BatchgenError `redis_unavailable` when redis-server is not installed or does not start in 10 s.
 */
export async function startRedisServer(extraArgs: string[] = []): Promise<LocalRedis> {
  if (!hasRedisServer()) {
    throw new BatchgenError(
      'redis_unavailable',
      'redis-server is not on the PATH. Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis), ' +
        'or point REDIS_URL at a running Redis',
    );
  }
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-redis-'));
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extraArgs];
  const url = `redis://127.0.0.1:${port}`;
  let proc: ChildProcess;
  try {
    proc = await spawnAndPing(args, url, port);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  let stopped = false;
  const exitedOf = (p: ChildProcess) =>
    p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise<void>((res) => p.once('exit', () => res()));
  return {
    url,
    port,
    dir,
    async signal(sig) {
      const p = proc;
      if (p.exitCode !== null || p.signalCode !== null) return;
      p.kill(sig);
      if (sig === 'SIGKILL' || sig === 'SIGTERM') await exitedOf(p);
    },
    async restart() {
      if (stopped) throw new Error('redis-server was stopped');
      if (proc.exitCode === null && proc.signalCode === null) throw new Error('redis-server is still running: kill it first');
      proc = await spawnAndPing(args, url, port);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGCONT'); // a frozen server cannot exit
        const exited = exitedOf(proc);
        proc.kill('SIGTERM');
        await Promise.race([exited, new Promise((res) => setTimeout(res, 3000))]);
        if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Spawns redis-server and resolves once it answers PING (10 s at most, for a server that loads its files). */
async function spawnAndPing(args: string[], url: string, port: number): Promise<ChildProcess> {
  const proc: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => {});
    try {
      await r.connect();
      await r.ping();
      r.disconnect();
      return proc;
    } catch {
      r.disconnect();
      if (Date.now() > deadline || proc.exitCode !== null) {
        if (proc.exitCode === null) proc.kill('SIGKILL');
        throw new BatchgenError('redis_unavailable', `redis-server did not start on port ${port}`);
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  }
}
