/**
 * `batchgen demo`: the whole system on one machine. Starts a private redis-server on a free port
 * (unless REDIS_URL or --redis is given), makes a small random model (unless --model is given),
 * starts worker processes, submits a batch of about 200 mixed requests (several prompt buckets;
 * greedy, sampling and beam search; both JSONL forms; chat lines when the model has a chat
 * template, as the demo's own model has), shows progress, prints a summary and cleans
 * up what it started.
 */
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { startRedisServer } from '../local/redis-server.js';
import { WorkerProcess } from '../local/worker-process.js';
import { loadChatTemplate } from '../model/chat-template.js';
import { componentLogger } from '../observability/logger.js';
import { isTerminal } from '../producer/batch-handle.js';
import { GenerationClient } from '../producer/client.js';
import { writeErrorsFile, writeResultsFile } from '../producer/jsonl.js';
import type { BatchRecord } from '../shared/batch-store.js';
import { Keyspace } from '../shared/keys.js';
import { parseModelSpecs, type ModelSpec } from '../shared/models.js';
import { redactUrl } from '../shared/redis.js';
import type { WorkerStats } from '../worker/heartbeat.js';
import { err, formatDuration, numberFlag, out } from './common.js';
import { ProgressReporter } from './progress.js';

const USAGE = `usage: batchgen demo [--model NAME=DIR] [--requests 200] [--workers 2] [--redis URL] [--out FILE] [--keep]
Runs the whole system on one machine and prints a summary. Without --redis (or REDIS_URL) it starts a
private redis-server on a free port; without --model it makes a small random Qwen2 with a ChatML template.`;

const TOPICS = [
  'TensorFlow is',
  'A queue of prompts',
  'Compiled functions are fast when',
  'The weather today',
  'In a distant galaxy',
  'Redis keeps',
  'Batching requests',
];
const FILLER = 'and then the story goes on with more words about shapes buckets and static caches';

/**
 * ~n mixed requests: prompt lengths over several buckets, greedy / sampling / beam, both forms;
 * with `chat` (the model has a chat template) a few chat lines too, OpenAI's and native.
 */
export function demoRequests(n: number, model: string, opts: { chat?: boolean } = {}): Record<string, unknown>[] {
  const reqs: Record<string, unknown>[] = [];
  const words = FILLER.split(' ');
  for (let i = 0; i < n; i++) {
    const extra = [0, 4, 12, 30][i % 4] + (i % 5);
    const prompt =
      `${TOPICS[i % TOPICS.length]} ${words.slice(0, extra % words.length).join(' ')}${extra >= words.length ? ` ${words.slice(0, extra - words.length).join(' ')}` : ''}`.trim();
    const kind = i % 10;
    const max = [8, 12, 16, 24][(i >> 2) % 4];
    const messages = [{ role: 'user', content: prompt }];
    if (opts.chat && i % 20 === 0) reqs.push({ custom_id: `chat-native-${i}`, model, messages, max_new_tokens: max });
    else if (opts.chat && i % 20 === 19)
      reqs.push({
        custom_id: `chat-${i}`,
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model, messages, max_completion_tokens: max, temperature: 0 },
      });
    else if (kind < 5) reqs.push({ custom_id: `greedy-${i}`, model, prompt, max_new_tokens: max });
    else if (kind < 8)
      reqs.push({
        custom_id: `sample-${i}`,
        model,
        prompt,
        max_new_tokens: max,
        do_sample: true,
        temperature: 0.8,
        top_k: 40,
        top_p: 0.95,
        seed: i,
      });
    else if (kind < 9) reqs.push({ custom_id: `beam-${i}`, model, prompt, max_new_tokens: Math.min(max, 12), num_beams: 2 });
    else
      reqs.push({
        custom_id: `openai-${i}`,
        method: 'POST',
        url: '/v1/completions',
        body: { model, prompt, max_tokens: max, temperature: 0 },
      });
  }
  return reqs;
}

/** What the summary needs besides the workers' heartbeats. */
export interface DemoOutcome {
  batchId: string;
  record: BatchRecord;
  wallMs: number;
  totalMs: number;
  queueName: (key: string) => string;
  results: { lines: number; file: string; errors: number; errorsFile: string };
}

/** The summary printed at the end: per worker, retraces, throughput and padding waste. Pure. */
export function demoSummary(stats: WorkerStats[], o: DemoOutcome): string {
  const sum = (f: (w: WorkerStats) => number) => stats.reduce((s, w) => s + f(w), 0);
  const tokens = sum((w) => w.tokens);
  const busy = sum((w) => w.busy_ms);
  const promptReal = sum((w) => w.prompt_tokens);
  const promptBucket = sum((w) => w.prompt_bucket_tokens);
  const rows = sum((w) => w.rows);
  const dummy = sum((w) => w.dummy_rows);
  const keys = [...new Set(stats.flatMap((w) => w.keys))].sort();
  const sizes = [...new Set(stats.flatMap((w) => w.batch_sizes))].sort((a, b) => a - b);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const rec = o.record;
  let s = `\nbatch ${o.batchId}: ${rec.status}, ${rec.counts.completed} completed, ${rec.counts.failed} failed, in ${formatDuration(o.wallMs)} (compiles included)\n\n`;
  s += `compile keys (${keys.length}), each compiled at batch sizes ${sizes.join(', ')}:\n${keys.map((k) => `  ${o.queueName(k)}`).join('\n')}\n\n`;
  s += '  worker            keys  variants  compiles  retraces  batches   jobs  tokens  tokens/s (busy)\n';
  for (const w of stats) {
    const cols = String(w.keys.length).padStart(6) + [w.variants, w.compiles, w.retraces].map((x) => String(x).padStart(10)).join('');
    const rate = (w.busy_ms ? (w.tokens * 1000) / w.busy_ms : 0).toFixed(0);
    s += `  ${w.id.padEnd(16)}${cols}${String(w.batches).padStart(9)}${String(w.jobs_completed).padStart(7)}${String(w.tokens).padStart(8)}${rate.padStart(17)}\n`;
  }
  s += `\nretraces after warm-up: ${sum((w) => w.retraces)} (must be 0)\n`;
  s += `throughput: ${((tokens * 1000) / Math.max(1, o.wallMs)).toFixed(0)} tokens/s overall, ${((tokens * 1000) / Math.max(1, busy)).toFixed(0)} tokens/s per busy worker\n`;
  s += `padding waste: prompts ${pct(promptBucket ? 1 - promptReal / promptBucket : 0)} of prompt-bucket tokens; batches ${pct(rows + dummy ? dummy / (rows + dummy) : 0)} dummy rows\n`;
  s += `results: ${o.results.lines} lines in ${o.results.file}${o.results.errors ? `; ${o.results.errors} errors in ${o.results.errorsFile}` : ''}\n`;
  s += `total time ${formatDuration(o.totalMs)}\n`;
  return s;
}

/** Cleanups run in reverse order of registration, each once, each failure reported. */
class Cleanups {
  private readonly list: { name: string; run: () => Promise<void> | void }[] = [];
  add(name: string, run: () => Promise<void> | void): void {
    this.list.push({ name, run });
  }
  async runAll(): Promise<void> {
    for (const c of this.list.splice(0).reverse()) {
      try {
        await c.run();
      } catch (e) {
        err(`cleanup (${c.name}) failed: ${(e as Error).message}\n`);
      }
    }
  }
}

async function demoModel(values: { model?: string }, tmp: string): Promise<ModelSpec> {
  if (values.model) return parseModelSpecs([values.model])[0];
  const dir = join(tmp, 'model');
  const { makeModel } = await import('../compiler/make-model.js');
  await makeModel({
    out: dir,
    arch: 'qwen2',
    layers: 2,
    heads: 4,
    kvHeads: 2,
    embd: 128,
    positions: 256,
    seed: 7,
    tied: false,
    chatTemplate: 'chatml',
  });
  err(`made a small random Qwen2 (2 layers, 4 heads, 2 KV heads, embd 128, 256 positions, a ChatML chat template) in ${dir}\n`);
  return { name: 'demo-qwen2', dir };
}

/** Heartbeats of the workers under this prefix (their last one stays a minute after they stop). */
async function workerStats(raw: Redis, ks: Keyspace): Promise<WorkerStats[]> {
  const names = await raw.keys(ks.workersPattern());
  const vals = names.length ? await raw.mget(...names) : [];
  return vals.flatMap((v) => (v ? [JSON.parse(v) as WorkerStats] : [])).sort((a, b) => a.id.localeCompare(b.id));
}

async function waitForWorkers(raw: Redis, ks: Keyspace, workers: WorkerProcess[], logFile: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await raw.keys(ks.workersPattern())).length >= workers.length) return;
    if (workers.some((w) => !w.running)) throw new Error(`a worker exited at start; see ${logFile} (run with --keep)`);
    await new Promise((r) => setTimeout(r, 100));
  }
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
  const cleanups = new Cleanups();
  cleanups.add('temporary folder', () => (values.keep ? undefined : rmSync(tmp, { recursive: true, force: true })));
  const onSignal = () => {
    err('\ninterrupted: cleaning up\n');
    void cleanups.runAll().then(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const t0 = Date.now();
  try {
    // 1. Redis: the one given, or a private one
    let redisUrl = values.redis ?? process.env.REDIS_URL;
    if (!redisUrl) {
      const rs = await startRedisServer();
      cleanups.add('redis-server', () => rs.stop());
      redisUrl = rs.url;
      err(`redis-server started on port ${rs.port} (private, removed at the end)\n`);
    } else {
      err(`using Redis at ${redactUrl(redisUrl)}\n`);
    }
    // 2. the model
    const spec = await demoModel(values, tmp);
    // 3. workers, under a prefix of their own
    const prefix = `batchgen-demo-${process.pid}`;
    const ks = new Keyspace({ prefix });
    const logFile = join(tmp, 'workers.log');
    const logs = createWriteStream(logFile);
    const env = { BATCHGEN_LOG_LEVEL: process.env.BATCHGEN_LOG_LEVEL ?? 'info' };
    const workers = Array.from(
      { length: nWorkers },
      (_, i) =>
        new WorkerProcess(
          ['--model', `${spec.name}=${spec.dir}`, '--redis', redisUrl, '--prefix', prefix, '--id', `demo-worker-${i + 1}`],
          { env, tee: logs },
        ),
    );
    cleanups.add('workers', () => Promise.all(workers.map((w) => w.stop())).then(() => undefined));
    err(`started ${nWorkers} worker processes (their logs: ${logFile}${values.keep ? '' : ', removed at the end unless --keep'})\n`);
    // 4. submit, with progress
    const client = await GenerationClient.connect({
      redisUrl,
      prefix,
      models: [spec],
      logger: componentLogger('demo').child({}, { level: 'warn' }),
    });
    cleanups.add('client', () => client.close());
    const raw = new Redis(redisUrl);
    cleanups.add('redis connection', () => raw.disconnect());
    await waitForWorkers(raw, ks, workers, logFile);
    const chat = loadChatTemplate(spec.dir) !== null;
    const handle = await client.submitBatch(demoRequests(nRequests, spec.name, { chat }), { batchId: `demo-${Date.now()}`, input: 'demo' });
    const rep = handle.report!;
    err(
      `submitted ${rep.requests} requests to ${rep.keys.length} compile keys; the workers compile each key's variants, then serve them\n`,
    );
    const tSubmit = Date.now();
    const progress = new ProgressReporter(tSubmit, 2000);
    const record = await handle
      .wait({ pollMs: 200, onProgress: (r) => progress.update(r, isTerminal(r.status)), timeoutMs: 30 * 60_000 })
      .finally(() => progress.stop());
    const lines = await writeResultsFile(outFile, handle.id, handle.results());
    const errors = await handle.errors();
    if (errors.length) await writeErrorsFile(errFile, errors);
    // 5. stop the workers, then summarize from their last heartbeats
    await Promise.all(workers.map((w) => w.stop()));
    const wallMs = (record.completed_at ?? Date.now()) - tSubmit;
    const outcome = { batchId: handle.id, record, wallMs, totalMs: Date.now() - t0, queueName: (k: string) => ks.queue(k).name };
    await out(
      demoSummary(await workerStats(raw, ks), {
        ...outcome,
        results: { lines, file: outFile, errors: errors.length, errorsFile: errFile },
      }),
    );
    return record.status === 'completed' && record.counts.failed === 0 ? 0 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanups.runAll();
  }
}
