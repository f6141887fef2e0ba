/**
 * `batchgen demo`: the whole system on one machine. Starts a private redis-server on a free port
 * (unless REDIS_URL or --redis is given), makes a small random model (unless --model is given),
 * starts two worker processes, submits a batch of about 200 mixed requests (several prompt buckets;
 * greedy, sampling and beam search; both JSONL forms), shows progress, prints a summary and cleans
 * up what it started.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { BatchgenError } from '../shared/errors.js';
import { Keyspace } from '../shared/keys.js';
import { parseModelSpecs, type ModelSpec } from '../shared/models.js';
import { connectRedis } from '../shared/redis.js';
import { componentLogger } from '../observability/logger.js';
import { GenerationClient } from '../producer/client.js';
import { writeErrorsFile, writeResultsFile } from '../producer/jsonl.js';
import type { BatchRecord } from '../shared/batch-store.js';
import type { WorkerStats } from '../worker/worker.js';
import { err, formatDuration, numberFlag, out, progressBar } from './common.js';

const USAGE = `usage: batchgen demo [--model NAME=DIR] [--requests 200] [--workers 2] [--redis URL] [--out FILE] [--keep]
Runs the whole system on one machine and prints a summary. Without --redis (or REDIS_URL) it starts a
private redis-server on a free port; without --model it makes a small random GPT-2.`;

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));

const TOPICS = ['TensorFlow is', 'A queue of prompts', 'Compiled functions are fast when', 'The weather today', 'In a distant galaxy', 'Redis keeps', 'Batching requests'];
const FILLER = 'and then the story goes on with more words about shapes buckets and static caches';

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => res(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/** ~n mixed requests: prompt lengths over several buckets, greedy / sampling / beam, both forms. */
export function demoRequests(n: number, model: string): Record<string, unknown>[] {
  const reqs: Record<string, unknown>[] = [];
  const words = FILLER.split(' ');
  for (let i = 0; i < n; i++) {
    const extra = [0, 4, 12, 30][i % 4] + (i % 5);
    const prompt = `${TOPICS[i % TOPICS.length]} ${words.slice(0, extra % words.length).join(' ')}${extra >= words.length ? ` ${words.slice(0, extra - words.length).join(' ')}` : ''}`.trim();
    const kind = i % 10;
    const max = [8, 12, 16, 24][(i >> 2) % 4];
    if (kind < 5) reqs.push({ custom_id: `greedy-${i}`, model, prompt, max_new_tokens: max });
    else if (kind < 8) reqs.push({ custom_id: `sample-${i}`, model, prompt, max_new_tokens: max, do_sample: true, temperature: 0.8, top_k: 40, top_p: 0.95, seed: i });
    else if (kind < 9) reqs.push({ custom_id: `beam-${i}`, model, prompt, max_new_tokens: Math.min(max, 12), num_beams: 2 });
    else reqs.push({ custom_id: `openai-${i}`, method: 'POST', url: '/v1/completions', body: { model, prompt, max_tokens: max, temperature: 0 } });
  }
  return reqs;
}

export async function demoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      requests: { type: 'string' },
      workers: { type: 'string' },
      redis: { type: 'string' },
      out: { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  const nRequests = numberFlag('requests', values.requests, { min: 1, integer: true }) ?? 200;
  const nWorkers = numberFlag('workers', values.workers, { min: 1, integer: true }) ?? 2;
  const outFile = resolve(values.out ?? 'batchgen-demo-results.jsonl');
  const errFile = outFile.replace(/(\.jsonl)?$/, '.errors.jsonl');
  const tmp = mkdtempSync(join(tmpdir(), 'batchgen-demo-'));
  const cleanups: (() => Promise<void> | void)[] = [];
  const children: ChildProcess[] = [];
  const cleanup = async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    for (const f of cleanups.reverse()) await f();
    if (!values.keep) rmSync(tmp, { recursive: true, force: true });
  };
  const onSignal = () => {
    err('\ninterrupted: cleaning up\n');
    void cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const t0 = Date.now();
  try {
    // 1. Redis
    let redisUrl = values.redis ?? process.env.REDIS_URL;
    if (!redisUrl) {
      if (spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).status !== 0) {
        throw new BatchgenError(
          'redis_unavailable',
          'the demo needs Redis: redis-server is not on the PATH. Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis), ' +
            'or point REDIS_URL at a running Redis (for example: docker run -p 6379:6379 redis:7, then REDIS_URL=redis://127.0.0.1:6379 batchgen demo)',
        );
      }
      const port = await freePort();
      const dir = join(tmp, 'redis');
      rmSync(dir, { recursive: true, force: true });
      await import('node:fs').then((fs) => fs.mkdirSync(dir, { recursive: true }));
      const rs = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
      redisUrl = `redis://127.0.0.1:${port}`;
      cleanups.push(
        () =>
          new Promise<void>((res) => {
            if (rs.exitCode !== null) return res();
            rs.once('exit', () => res());
            rs.kill('SIGTERM');
          }),
      );
      for (let i = 0; ; i++) {
        try {
          (await connectRedis({ url: redisUrl, connectTimeoutMs: 500 })).disconnect();
          break;
        } catch (e) {
          if (i > 40) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      err(`redis-server started on port ${port} (private, removed at the end)\n`);
    } else {
      err(`using Redis at ${redisUrl.replace(/\/\/([^:@/]*):([^@/]*)@/, '//$1:***@')}\n`);
    }
    // 2. model
    let spec: ModelSpec;
    if (values.model) {
      [spec] = parseModelSpecs([values.model]);
    } else {
      const dir = join(tmp, 'model');
      const { makeModel } = await import('../compiler/make-model.js');
      await makeModel({ out: dir, layers: 2, heads: 4, embd: 128, positions: 256, seed: 7 });
      spec = { name: 'demo-gpt2', dir };
      err(`made a small random GPT-2 (2 layers, 4 heads, embd 128, 256 positions) in ${dir}\n`);
    }
    // 3. workers
    const prefix = `batchgen-demo-${process.pid}`;
    const logFile = join(tmp, 'workers.log');
    const logs = createWriteStream(logFile);
    for (let i = 0; i < nWorkers; i++) {
      const w = spawn(process.execPath, [MAIN, 'worker', '--model', `${spec.name}=${spec.dir}`, '--redis', redisUrl, '--prefix', prefix, '--id', `demo-worker-${i + 1}`], {
        env: { ...process.env, BATCHGEN_LOG_LEVEL: process.env.BATCHGEN_LOG_LEVEL ?? 'info' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      w.stderr!.pipe(logs, { end: false });
      children.push(w);
    }
    err(`started ${nWorkers} worker processes (their logs: ${logFile}${values.keep ? '' : ', removed at the end unless --keep'})\n`);
    // 4. submit
    const client = await GenerationClient.connect({ redisUrl, prefix, models: [spec], logger: componentLogger('demo').child({}, { level: 'warn' }) });
    cleanups.push(() => client.close());
    const raw = new Redis(redisUrl);
    cleanups.push(() => raw.disconnect());
    const ks = new Keyspace({ prefix });
    for (let i = 0; i < 600; i++) {
      const n = (await raw.keys(`${ks.prefix}:worker:*`)).length;
      if (n >= nWorkers) break;
      if (children.some((c) => c.exitCode !== null)) throw new Error(`a worker exited at start; see ${logFile} (run with --keep)`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const requests = demoRequests(nRequests, spec.name);
    const handle = await client.submitBatch(requests, { batchId: `demo-${Date.now()}`, input: 'demo' });
    const rep = handle.report!;
    err(`submitted ${rep.requests} requests to ${rep.keys.length} compile keys; the workers compile each key's variants, then serve them\n`);
    const tty = process.stderr.isTTY === true;
    let last = 0;
    const tSubmit = Date.now();
    const rec = await handle.wait({
      pollMs: 200,
      onProgress: (r: BatchRecord) => {
        const done = r.counts.completed + r.counts.failed;
        const line = `${progressBar(done, r.counts.total)} ${formatDuration(Date.now() - tSubmit)}`;
        if (tty) process.stderr.write(`\r${line}\x1b[K`);
        else if (Date.now() - last > 2000 || done === r.counts.total) {
          last = Date.now();
          err(`${line}\n`);
        }
      },
      timeoutMs: 30 * 60_000,
    });
    if (tty) err('\n');
    const nResults = await writeResultsFile(outFile, handle.id, handle.results());
    const errors = await handle.errors();
    if (errors.length) await writeErrorsFile(errFile, errors);
    // 5. stop the workers (their last heartbeat stays a minute) and summarize
    for (const c of children) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    const stats: WorkerStats[] = [];
    for (const k of await raw.keys(`${ks.prefix}:worker:*`)) stats.push(JSON.parse((await raw.get(k))!) as WorkerStats);
    stats.sort((a, b) => a.id.localeCompare(b.id));
    const totalTokens = stats.reduce((s, w) => s + w.tokens, 0);
    const busy = stats.reduce((s, w) => s + w.busy_ms, 0);
    const promptReal = stats.reduce((s, w) => s + w.prompt_tokens, 0);
    const promptBucket = stats.reduce((s, w) => s + w.prompt_bucket_tokens, 0);
    const rows = stats.reduce((s, w) => s + w.rows, 0);
    const dummy = stats.reduce((s, w) => s + w.dummy_rows, 0);
    const wall = (rec.completed_at ?? Date.now()) - tSubmit;
    const keys = [...new Set(stats.flatMap((w) => w.keys))].sort();
    const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
    let summary = `\nbatch ${handle.id}: ${rec.status}, ${rec.counts.completed} completed, ${rec.counts.failed} failed, in ${formatDuration(wall)} (compiles included)\n\n`;
    summary += `compile keys (${keys.length}), each compiled at batch sizes 1, 2, 4, 8:\n${keys.map((k) => `  ${ks.queue(k).name}`).join('\n')}\n\n`;
    summary += `  worker            keys  variants  compiles  retraces  batches   jobs  tokens  tokens/s (busy)\n`;
    for (const w of stats) {
      summary += `  ${w.id.padEnd(16)}${String(w.keys.length).padStart(6)}${String(w.variants).padStart(10)}${String(w.compiles).padStart(10)}${String(w.retraces).padStart(10)}${String(w.batches).padStart(9)}${String(w.jobs_completed).padStart(7)}${String(w.tokens).padStart(8)}${(w.busy_ms ? (w.tokens * 1000) / w.busy_ms : 0).toFixed(0).padStart(17)}\n`;
    }
    summary += `\nretraces after warm-up: ${stats.reduce((s, w) => s + w.retraces, 0)} (must be 0)\n`;
    summary += `throughput: ${((totalTokens * 1000) / Math.max(1, wall)).toFixed(0)} tokens/s overall, ${((totalTokens * 1000) / Math.max(1, busy)).toFixed(0)} tokens/s per busy worker\n`;
    summary += `padding waste: prompts ${pct(promptBucket ? 1 - promptReal / promptBucket : 0)} of prompt-bucket tokens; batches ${pct(rows + dummy ? dummy / (rows + dummy) : 0)} dummy rows\n`;
    summary += `results: ${nResults} lines in ${outFile}${errors.length ? `; ${errors.length} errors in ${errFile}` : ''}\n`;
    summary += `total time ${formatDuration(Date.now() - t0)}\n`;
    await out(summary);
    return rec.status === 'completed' && rec.counts.failed === 0 ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}
