/**
 * `npm run bench:system`: the queue system against the work it wraps, in one run.
 *
 * 1. Generation: the same mixed requests (several buckets; greedy, sampling, beam) through Redis and
 *    two worker processes, and in one process with the compiler and no queue. Both warm their
 *    variants first (not timed). Target: the queue path keeps ≥ 90% of the in-process tokens/s per
 *    process used.
 * 2. Overhead: with a no-op engine, jobs/s through the whole system (validate, tokenize, enqueue,
 *    micro-batch, write one result per custom_id, complete) against plain BullMQ add-and-process
 *    with the same number of worker processes. Target: ≥ 50%.
 * 3. Padding waste of powers of two and of plan-buckets on a skewed prompt-length mix.
 * 4. Against the peer: one whole greedy job through Redis and the workers (defaults, and tuned),
 *    against transformers.js on onnxruntime-node on the same weights (bench/system-peer.ts). Runs
 *    only with BENCH_PEER_SOURCE and BENCH_PEER_MODEL set. Target: ≥ 1.5× the peer's tokens/s.
 *
 * Prints a table and writes bench/results/system.json. Env: BENCH_SECTIONS (which to run, a list of
 * generation, overhead, padding, peer; default all), BENCH_GEN_REQUESTS (320), BENCH_NOOP_JOBS
 * (4000), BENCH_LAYERS (2), BENCH_EMBD (128), BENCH_HEADS (4), BENCH_WORKERS (2), and the peer's
 * (bench/system-peer.ts).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { pino } from 'pino';
import { makeModel } from '../src/compiler/make-model.js';
import { demoRequests } from '../src/cli/demo.js';
import { bucketFor, DEFAULT_BUCKET_POLICY } from '../src/shared/buckets.js';
import { loadModelInfo, type ModelInfo } from '../src/model/info.js';
import { requestFromObject } from '../src/shared/requests.js';
import { GenerationClient } from '../src/producer/client.js';
import { prepareRequest } from '../src/producer/prepare.js';
import { planBuckets, policyPadding } from '../src/producer/bucket-plan.js';
import { type LocalRedis, startRedisServer } from '../src/local/redis-server.js';
import { spawnWorker, type WorkerProcess } from '../src/local/worker-process.js';
import { runSideBySide } from './side-by-side.js';
import { peerSection, peerSetup } from './system-peer.js';

const env = (k: string, d: number) => Number(process.env[k] ?? d);
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..', '..');
const SIZES = [1, 2, 4, 8];
const quiet = pino({ level: 'silent' });
const SECTIONS = ['generation', 'overhead', 'padding', 'peer'] as const;
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

type Row = [string, string, string];

interface Ctx {
  tmp: string;
  redis: LocalRedis;
  nWorkers: number;
  report: Record<string, unknown>;
  /** the small model of sections 1 and 2, made on first use */
  small?: { dir: string; info: ModelInfo; shape: { layers: number; heads: number; embd: number; positions: number } };
}

function runJson(script: string, args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [join(HERE, script), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => (out += d));
    p.on('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`${script} exited ${code}`)),
    );
  });
}

async function stopAll(ws: WorkerProcess[]): Promise<void> {
  await Promise.all(ws.map((w) => w.stop()));
}

async function smallModel(ctx: Ctx): Promise<NonNullable<Ctx['small']>> {
  if (ctx.small) return ctx.small;
  const dir = join(ctx.tmp, 'model');
  const shape = { layers: env('BENCH_LAYERS', 2), heads: env('BENCH_HEADS', 4), embd: env('BENCH_EMBD', 128), positions: 256 };
  await makeModel({ out: dir, ...shape, seed: 7 });
  ctx.small = { dir, info: await loadModelInfo({ name: 'bench', dir }), shape };
  return ctx.small;
}

// ---- 1. generation: queue vs in-process ------------------------------------------------
async function generationSection(ctx: Ctx): Promise<Row[]> {
  const { redis, nWorkers, tmp } = ctx;
  const { dir, info, shape } = await smallModel(ctx);
  const nGen = env('BENCH_GEN_REQUESTS', 320);
  const reqs = demoRequests(nGen, 'bench');
  const prepared = await Promise.all(reqs.map((r) => prepareRequest(requestFromObject(r), info)));
  const keys = [...new Set(prepared.map((p) => p.keyId))].sort();
  // the queue resolves a missing seed to a random one; fix them so both paths run the same rows
  const rows = prepared.map((p) => ({ promptIds: p.promptIds, params: p.params }));
  const rowsFile = join(tmp, 'rows.json');
  writeFileSync(rowsFile, JSON.stringify({ name: 'bench', keys, rows, sizes: SIZES }));
  process.stderr.write(`generation: ${nGen} requests over ${keys.length} compile keys, model ${JSON.stringify(shape)}\n`);
  const inproc = (await runJson('system-inprocess.js', [dir, rowsFile])) as {
    ms: number;
    warmMs: number;
    tokens: number;
    retraces: number;
    tokenIds: number[][];
  };
  const inprocTps = (inproc.tokens * 1000) / inproc.ms;
  process.stderr.write(`  in-process, 1 process: ${inproc.tokens} tokens in ${inproc.ms.toFixed(0)} ms\n`);
  // the same rows split over as many in-process runners as there are workers, side by side: what
  // the machine gives that many processes at once (cores shared with SMT siblings, memory bandwidth)
  const parts = Array.from({ length: nWorkers }, (_, w) => {
    const f = join(tmp, `rows-${w}.json`);
    writeFileSync(f, JSON.stringify({ name: 'bench', keys, rows: rows.filter((_, i) => i % nWorkers === w), sizes: SIZES }));
    return f;
  });
  const side = await runSideBySide<{ tokens: number; ms: number; retraces: number }>(
    join(HERE, 'system-inprocess.js'),
    parts.map((f) => [dir, f, '--wait-go']),
  );
  const sideTokens = side.results.reduce((s, r) => s + r.tokens, 0);
  const sideTps = (sideTokens * 1000) / side.ms;
  process.stderr.write(`  in-process, ${nWorkers} processes side by side: ${sideTokens} tokens in ${side.ms.toFixed(0)} ms\n`);

  const ws: WorkerProcess[] = [];
  for (let i = 0; i < nWorkers; i++)
    ws.push(
      spawnWorker(redis.url, [`bench=${dir}`], ['--prefix', 'gen', '--id', `gen-${i + 1}`, '--keys', keys.join(',')], {
        env: { BATCHGEN_LOG_LEVEL: 'warn' },
      }),
    );
  // warm: a worker writes its first heartbeat after warming every key
  const client = await GenerationClient.connect({ redisUrl: redis.url, prefix: 'gen', models: [{ name: 'bench', dir }], logger: quiet });
  for (let i = 0; i < 1200; i++) {
    const n = (await Promise.all(ws.map((w) => client.redis.exists(client.keys.worker(`gen-${ws.indexOf(w) + 1}`))))).reduce(
      (s, x) => s + x,
      0,
    );
    if (n === ws.length) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const withSeeds = reqs.map((r, i) => {
    const p = prepared[i].params;
    if ('body' in r) return { ...r, body: { ...(r.body as object), seed: p.seed } };
    return { ...r, seed: p.seed };
  });
  const t0 = performance.now();
  const h = await client.submitBatch(withSeeds, { batchId: 'gen' });
  const rec = await h.wait({ pollMs: 20 });
  const queueMs = performance.now() - t0;
  let queueTokens = 0;
  let same = 0;
  const byId = new Map<string, number[]>();
  for await (const r of h.results()) {
    queueTokens += r.completion_tokens;
    byId.set(r.custom_id, r.token_ids);
  }
  reqs.forEach((r, i) => {
    if (JSON.stringify(byId.get(r.custom_id as string)) === JSON.stringify(inproc.tokenIds[i])) same += 1;
  });
  await stopAll(ws);
  const stats = await Promise.all(
    ws.map(
      async (_, i) =>
        JSON.parse((await client.redis.get(client.keys.worker(`gen-${i + 1}`)))!) as {
          retraces: number;
          compiles: number;
          keys: string[];
          busy_ms: number;
          tokens: number;
          batches: number;
          rows: number;
          dummy_rows: number;
        },
    ),
  );
  await client.close();
  const queueTps = (queueTokens * 1000) / queueMs;
  const perProcess = queueTps / sideTps;
  const perProcessVsAlone = queueTps / nWorkers / inprocTps;
  const retraces = stats.map((s) => s.retraces);
  ctx.report.generation = {
    requests: nGen,
    keys: keys.length,
    model: shape,
    in_process: { tokens: inproc.tokens, ms: inproc.ms, tokens_per_s: inprocTps, retraces: inproc.retraces },
    in_process_side_by_side: { processes: nWorkers, tokens: sideTokens, ms: side.ms, tokens_per_s: sideTps },
    queue: {
      status: rec.status,
      tokens: queueTokens,
      ms: queueMs,
      tokens_per_s: queueTps,
      workers: nWorkers,
      retraces,
      compiles: stats.map((s) => s.compiles),
      per_worker: stats.map((s) => ({
        busy_ms: s.busy_ms,
        tokens: s.tokens,
        batches: s.batches,
        rows: s.rows,
        dummy_rows: s.dummy_rows,
        busy_tokens_per_s: (s.tokens * 1000) / s.busy_ms,
      })),
    },
    identical_outputs: `${same}/${nGen}`,
    per_process_ratio: perProcess,
    per_process_ratio_vs_one_process_alone: perProcessVsAlone,
    target: 0.9,
  };
  return [
    [`generation, in-process (1 process)`, `${inprocTps.toFixed(0)} tokens/s`, `${nGen} requests, ${(inproc.ms / 1000).toFixed(1)} s`],
    [
      `generation, Redis + ${nWorkers} workers`,
      `${queueTps.toFixed(0)} tokens/s`,
      `${(queueMs / 1000).toFixed(1)} s, retraces ${retraces.join('/')}, same ids ${same}/${nGen}`,
    ],
    [
      `generation, in-process (${nWorkers} side by side)`,
      `${sideTps.toFixed(0)} tokens/s`,
      `the same rows split ${nWorkers} ways, started together`,
    ],
    [`  per process, queue / in-process`, pct(perProcess), `target ≥ 90% (against ${nWorkers} in-process side by side)`],
    [`  per process, queue / 1 process alone`, pct(perProcessVsAlone), `(queue tokens/s / ${nWorkers}) / 1-process tokens/s`],
  ];
}

// ---- 2. overhead: noop engine vs plain BullMQ ----------------------------------------------
async function overheadSection(ctx: Ctx): Promise<Row[]> {
  const { redis, nWorkers } = ctx;
  const { dir, info } = await smallModel(ctx);
  const nJobs = env('BENCH_NOOP_JOBS', 4000);
  const noopReqs = Array.from({ length: nJobs }, (_, i) => ({
    custom_id: `j${i}`,
    model: 'bench',
    prompt: `job ${i}`,
    max_new_tokens: 1,
  }));
  const noopKeys = [
    ...new Set((await Promise.all(noopReqs.slice(0, 50).map((r) => prepareRequest(requestFromObject(r), info)))).map((p) => p.keyId)),
  ];
  const nw: WorkerProcess[] = [];
  for (let i = 0; i < nWorkers; i++) {
    nw.push(
      spawnWorker(
        redis.url,
        [`bench=${dir}`],
        ['--prefix', 'noop', '--id', `noop-${i + 1}`, '--engine', 'noop', '--keys', noopKeys.join(','), '--max-wait-ms', '5'],
        { env: { BATCHGEN_LOG_LEVEL: 'warn' } },
      ),
    );
  }
  const nc = await GenerationClient.connect({
    redisUrl: redis.url,
    prefix: 'noop',
    models: [{ name: 'bench', dir }],
    logger: quiet,
    chunkSize: 1000,
  });
  for (let i = 0; i < 600; i++) {
    const n = (await Promise.all(nw.map((_, j) => nc.redis.exists(nc.keys.worker(`noop-${j + 1}`))))).reduce((s, x) => s + x, 0);
    if (n === nw.length) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const n0 = performance.now();
  const nh = await nc.submitBatch(noopReqs, { batchId: 'noop' });
  const submitMs = performance.now() - n0;
  const nrec = await nh.wait({ pollMs: 10 });
  const oursMs = performance.now() - n0;
  await stopAll(nw);
  await nc.close();
  const oursJps = (nrec.counts.completed * 1000) / oursMs;

  const plainProcs = Array.from({ length: nWorkers }, () =>
    spawn(process.execPath, [join(HERE, 'plain-bullmq-worker.js'), redis.url, 'plain', '8'], { stdio: ['ignore', 'ignore', 'pipe'] }),
  );
  await Promise.all(
    plainProcs.map(
      (p) =>
        new Promise<void>((resolve) => {
          p.stderr!.setEncoding('utf8');
          p.stderr!.on('data', (d: string) => d.includes('ready') && resolve());
        }),
    ),
  );
  const pq = new Queue('plain', { connection: { url: redis.url }, prefix: 'plain' });
  // the payload of the generation section's first request
  const payload = await prepareRequest(requestFromObject(demoRequests(1, 'bench')[0]), info);
  const p0 = performance.now();
  for (let i = 0; i < nJobs; i += 1000) {
    await pq.addBulk(
      Array.from({ length: Math.min(1000, nJobs - i) }, (_, j) => ({
        name: 'gen',
        data: { custom_id: `j${i + j}`, prompt_ids: payload.promptIds, params: payload.params },
        opts: { jobId: `plain/j${i + j}`, removeOnComplete: false },
      })),
    );
  }
  while ((await pq.getCompletedCount()) < nJobs) await new Promise((r) => setTimeout(r, 10));
  const plainMs = performance.now() - p0;
  await pq.close();
  for (const p of plainProcs) p.kill('SIGTERM');
  await Promise.all(plainProcs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)))));
  const plainJps = (nJobs * 1000) / plainMs;
  ctx.report.overhead = {
    jobs: nJobs,
    batchgen_noop: { ms: oursMs, submit_ms: submitMs, jobs_per_s: oursJps, completed: nrec.counts.completed },
    plain_bullmq: { ms: plainMs, jobs_per_s: plainJps, concurrency_per_worker: 8 },
    ratio: oursJps / plainJps,
    target: 0.5,
  };
  return [
    [
      `no-op engine, batchgen end to end`,
      `${oursJps.toFixed(0)} jobs/s`,
      `${nJobs} jobs, ${(oursMs / 1000).toFixed(2)} s (submit ${(submitMs / 1000).toFixed(2)} s)`,
    ],
    [`plain BullMQ add + process`, `${plainJps.toFixed(0)} jobs/s`, `${nWorkers} workers × concurrency 8`],
    [`  batchgen / plain BullMQ`, pct(oursJps / plainJps), `target ≥ 50%`],
  ];
}

// ---- 3. padding waste on a skewed mix ---------------------------------------------------------
function paddingSection(ctx: Ctx): Row[] {
  let seed = 11;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const lengths = Array.from({ length: 2000 }, () => {
    const u = rnd();
    if (u < 0.75) return 3 + Math.floor(rnd() * 20); // short prompts
    if (u < 0.95) return 24 + Math.floor(rnd() * 80); // medium
    return 150 + Math.floor(rnd() * 350); // a long tail
  });
  const pow2 = policyPadding(lengths, DEFAULT_BUCKET_POLICY, 1024);
  const pow2Count = new Set(lengths.map((n) => bucketFor(n, DEFAULT_BUCKET_POLICY, 1024))).size;
  const plans = [...new Set([4, pow2Count, 8])].sort((a, b) => a - b).map((k) => ({ k, ...planBuckets(lengths, k) }));
  ctx.report.padding = {
    prompts: lengths.length,
    pow2: { waste: pow2.waste, padded: pow2.padded, real: pow2.real, buckets: pow2Count },
    plans: plans.map((p) => ({ k: p.k, buckets: p.buckets, waste: p.waste, padded: p.padded })),
  };
  return [
    [`padding waste, powers of two`, pct(pow2.waste), `${lengths.length} prompts, skewed lengths; ${pow2Count} buckets used`],
    ...plans.map((p): Row => [`padding waste, plan-buckets K=${p.k}`, pct(p.waste), `buckets ${p.buckets.join(',')}`]),
  ];
}

// ---- 4. against the peer ----------------------------------------------------------------------
async function againstPeerSection(ctx: Ctx): Promise<Row[]> {
  const setup = peerSetup();
  if (typeof setup === 'string') {
    process.stderr.write(`${setup}\n`);
    return [];
  }
  const { report, rows } = await peerSection(ctx.redis, setup, ctx.nWorkers, ctx.tmp);
  ctx.report.peer = report;
  return rows;
}

function tableOf(rows: Row[], report: Record<string, unknown>): string {
  const w0 = Math.max('measure'.length, ...rows.map((r) => r[0].length));
  const w1 = Math.max('result'.length, ...rows.map((r) => r[1].length));
  let table = `\n| ${'measure'.padEnd(w0)} | ${'result'.padEnd(w1)} | notes |\n| ${'-'.repeat(w0)} | ${'-'.repeat(w1)} | --- |\n`;
  for (const r of rows) table += `| ${r[0].padEnd(w0)} | ${r[1].padEnd(w1)} | ${r[2]} |\n`;
  return `${table}\n${report.cpus} × ${report.cpu}, Node ${process.version}\n`;
}

/** BENCH_SECTIONS: a comma-separated list of section names; default all. */
function chosenSections(): Set<string> {
  const text = process.env.BENCH_SECTIONS;
  if (!text) return new Set(SECTIONS);
  const names = text.split(',').map((s) => s.trim());
  const bad = names.filter((n) => !(SECTIONS as readonly string[]).includes(n));
  if (bad.length) throw new Error(`BENCH_SECTIONS: unknown ${bad.join(', ')} (expected some of ${SECTIONS.join(', ')})`);
  return new Set(names);
}

async function main(): Promise<void> {
  const sections = chosenSections();
  const tmp = mkdtempSync(join(tmpdir(), 'batchgen-bench-system-'));
  const redis = await startRedisServer();
  const nWorkers = env('BENCH_WORKERS', 2);
  const report: Record<string, unknown> = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    workers: nWorkers,
    sections: [...sections],
  };
  const ctx: Ctx = { tmp, redis, nWorkers, report };
  try {
    const rows: Row[] = [];
    if (sections.has('generation')) rows.push(...(await generationSection(ctx)));
    if (sections.has('overhead')) rows.push(...(await overheadSection(ctx)));
    if (sections.has('padding')) rows.push(...paddingSection(ctx));
    if (sections.has('peer')) rows.push(...(await againstPeerSection(ctx)));
    if (rows.length === 0) return;
    const table = tableOf(rows, report);
    process.stdout.write(table);
    report.table = table;
    const outDir = join(ROOT, 'bench', 'results');
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'system.json'), JSON.stringify(report, null, 2));
    process.stdout.write(`written: ${join(outDir, 'system.json')}\n`);
  } finally {
    await redis.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
