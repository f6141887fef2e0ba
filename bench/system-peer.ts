/**
 * The system benchmark's section "against the peer": one whole job (greedy requests of mixed prompt
 * lengths and max_new_tokens) through Redis and worker processes, against what a JavaScript user
 * would run instead: transformers.js on onnxruntime-node, one thread per process, as many processes
 * as workers, each batching its half of the requests itself (bench/peer-jobs.ts). Both sides run the
 * same weights: the workers load BENCH_PEER_SOURCE, the folder that BENCH_PEER_MODEL was exported
 * from.
 *
 * Env: BENCH_PEER_SOURCE (model folder), BENCH_PEER_MODEL (its ONNX export), BENCH_PEER_DIR (where
 * transformers.js is installed, default /tmp/peer), BENCH_PEER_REQUESTS (256), BENCH_PEER_BATCHES
 * (the peer's batch sizes, 8,16), BENCH_PEER_TUNED_SIZES (the tuned workers' batch sizes,
 * 1,2,4,8,16), BENCH_PEER_TUNED_BUCKETS (plan-buckets K of the tuned run, 4).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { loadModelInfo } from '../src/model/info.js';
import { planBuckets } from '../src/producer/bucket-plan.js';
import { GenerationClient } from '../src/producer/client.js';
import { type BucketPolicies, DEFAULT_POLICIES, prepareRequest } from '../src/producer/prepare.js';
import { DEFAULT_BATCH_SIZES, parseBatchSizes } from '../src/shared/batch-sizes.js';
import { DEFAULT_BUCKET_POLICY, formatBucketPolicy } from '../src/shared/buckets.js';
import { requestFromObject } from '../src/shared/requests.js';
import { mulberry32 } from '../src/shared/rng.js';
import type { LocalRedis } from '../src/local/redis-server.js';
import { spawnWorker, type WorkerProcess } from '../src/local/worker-process.js';
import { type CpuLoad, cpuLoadMeter } from './cpu-load.js';
import { PEER_PACKAGE, peerDir } from './peer-jobs.js';
import { runSideBySide } from './side-by-side.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const quiet = pino({ level: 'silent' });
const MODEL = 'peer';
/** How long the workers' compile and warm-up may take. */
const WARM_LIMIT_MS = 30 * 60_000;

export interface JobRequest {
  custom_id: string;
  ids: number[];
  maxNew: number;
}

/** One measured row: a whole job, from the start (submit, or "go") to its last result. */
export interface PeerSectionRow {
  label: string;
  requests: number;
  tokens: number;
  ms: number;
  tokens_per_s: number;
  /** loading and warming before the timed part (not timed), ms */
  warm_up_ms: number;
  /** real prompt tokens / tokens after padding (share of prompt compute spent on padding) */
  padding_waste: number;
  /** CPU used during the timed part: by the run, and by other work on the machine */
  load: CpuLoad | null;
  /** requests whose token ids equal those of our defaults row (null on that row) */
  identical_to_ours_default: string | null;
  [k: string]: unknown;
}

/** Why the section cannot run (a line for the log), or its folders. */
export function peerSetup(): { source: string; onnx: string } | string {
  const source = process.env.BENCH_PEER_SOURCE;
  const onnx = process.env.BENCH_PEER_MODEL;
  if (!source || !onnx) return 'against the peer: skipped (set BENCH_PEER_SOURCE and BENCH_PEER_MODEL; see README, Benchmarks)';
  const pkg = join(peerDir(), PEER_PACKAGE);
  if (!existsSync(pkg)) return `against the peer: skipped (no transformers.js at ${pkg}; set BENCH_PEER_DIR)`;
  if (!existsSync(join(onnx, 'onnx', 'model.onnx'))) throw new Error(`BENCH_PEER_MODEL=${onnx} has no onnx/model.onnx`);
  // the export copies config.json from the folder it was made from: a cheap check of "the same model"
  const cfg = (d: string) => JSON.stringify(JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')));
  if (cfg(source) !== cfg(onnx)) throw new Error(`BENCH_PEER_MODEL=${onnx} was not exported from BENCH_PEER_SOURCE=${source}`);
  return { source, onnx };
}

/** n greedy requests: prompts of 8 to 95 random token ids (never EOS), 8 to 32 new tokens; the same for a seed. */
export function peerJobRequests(n: number, vocab: number, seed = 5): JobRequest[] {
  const rnd = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  return Array.from({ length: n }, (_, i) => ({
    custom_id: `r${i}`,
    ids: Array.from({ length: int(8, 95) }, () => int(0, Math.min(vocab, 50256) - 1)),
    maxNew: int(8, 32),
  }));
}

interface OurSetting {
  label: string;
  prefix: string;
  batchSizes: readonly number[];
  policies: BucketPolicies;
  /** extra worker flags */
  flags: string[];
}

interface WorkerStats {
  kernels?: string;
  threads?: number;
  keys: string[];
  warm_ms: number;
  busy_ms: number;
  tokens: number;
  batches: number;
  rows: number;
  dummy_rows: number;
  prompt_tokens: number;
  prompt_bucket_tokens: number;
  retraces: number;
}

/** Waits until every worker has written its first heartbeat (after warming every key); ms taken. */
async function untilWarm(client: GenerationClient, ws: WorkerProcess[], ids: string[]): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < WARM_LIMIT_MS) {
    const n = (await Promise.all(ids.map((id) => client.redis.exists(client.keys.worker(id))))).reduce((s, x) => s + x, 0);
    if (n === ids.length) return performance.now() - t0;
    const dead = ws.find((w) => !w.running);
    if (dead) throw new Error(`worker exited during warm-up:\n${dead.stderr.slice(-8).join('\n')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`workers not warm after ${WARM_LIMIT_MS / 1000} s`);
}

async function workerStats(client: GenerationClient, ids: string[]): Promise<WorkerStats[]> {
  return Promise.all(ids.map(async (id) => JSON.parse((await client.redis.get(client.keys.worker(id)))!) as WorkerStats));
}

/** The job through Redis and `nWorkers` worker processes at one setting; timing starts at submit. */
async function runOurs(redis: LocalRedis, source: string, job: JobRequest[], s: OurSetting, nWorkers: number) {
  const info = await loadModelInfo({ name: MODEL, dir: source });
  const reqs = job.map((r) => ({ custom_id: r.custom_id, model: MODEL, prompt: r.ids, max_new_tokens: r.maxNew, do_sample: false }));
  const prepared = await Promise.all(reqs.map((r) => prepareRequest(requestFromObject(r), info, s.policies)));
  const keys = [...new Set(prepared.map((p) => p.keyId))].sort();
  const ids = Array.from({ length: nWorkers }, (_, i) => `${s.prefix}-${i + 1}`);
  const t0 = performance.now();
  const ws = ids.map((id) =>
    spawnWorker(
      redis.url,
      [`${MODEL}=${source}`],
      ['--prefix', s.prefix, '--id', id, '--keys', keys.join(','), '--batch-sizes', s.batchSizes.join(','), ...s.flags],
      { env: { BATCHGEN_LOG_LEVEL: 'warn' } },
    ),
  );
  const client = await GenerationClient.connect({
    redisUrl: redis.url,
    prefix: s.prefix,
    models: [{ name: MODEL, dir: source }],
    buckets: s.policies,
    logger: quiet,
  });
  try {
    await untilWarm(client, ws, ids);
    const warmUpMs = performance.now() - t0;
    const held = await workerStats(client, ids);
    const missing = held.flatMap((h) => keys.filter((k) => !h.keys.includes(k)));
    if (missing.length) throw new Error(`${s.label}: workers do not hold ${[...new Set(missing)].join(', ')} (raise --cache-mb)`);
    const r0 = performance.now();
    const meter = cpuLoadMeter();
    const h = await client.submitBatch(reqs, { batchId: s.prefix });
    const rec = await h.wait({ pollMs: 20 });
    const ms = performance.now() - r0;
    const load = meter();
    const byId = new Map<string, number[]>();
    let tokens = 0;
    for await (const r of h.results()) {
      tokens += r.completion_tokens;
      byId.set(r.custom_id, r.token_ids);
    }
    await Promise.all(ws.map((w) => w.stop()));
    const stats = await workerStats(client, ids);
    return { status: rec.status, keys, ms, load, tokens, warmUpMs, stats, tokenIds: job.map((r) => byId.get(r.custom_id) ?? []) };
  } finally {
    await Promise.all(ws.map((w) => w.stop()));
    await client.close();
  }
}

interface PeerResult {
  tokens: number;
  ms: number;
  batches: number;
  prompt_tokens: number;
  padded_prompt_tokens: number;
  row_steps: number;
  token_ids: number[][];
}

/** The job on the peer: `procs` processes started together, each with every procs-th request. */
async function runPeerJob(onnx: string, job: JobRequest[], B: number, procs: number, tmp: string) {
  const shares = Array.from({ length: procs }, (_, p) => job.map((r, i) => ({ r, i })).filter(({ i }) => i % procs === p));
  const argLists = shares.map((share, p) => {
    const f = join(tmp, `peer-jobs-b${B}-${p}.json`);
    writeFileSync(f, JSON.stringify({ batch: B, threads: 1, requests: share.map(({ r }) => ({ ids: r.ids, maxNew: r.maxNew })) }));
    return [onnx, f];
  });
  const t0 = performance.now();
  const side = await runSideBySide<PeerResult>(join(HERE, 'peer-jobs.js'), argLists);
  const warmUpMs = performance.now() - t0 - side.ms;
  const tokenIds: number[][] = job.map(() => []);
  shares.forEach((share, p) => {
    share.forEach(({ i }, k) => {
      tokenIds[i] = side.results[p].token_ids[k];
    });
  });
  const sum = (k: 'tokens' | 'prompt_tokens' | 'padded_prompt_tokens' | 'row_steps' | 'batches') =>
    side.results.reduce((s, r) => s + r[k], 0);
  return { ms: side.ms, load: side.load, warmUpMs, ready: side.ready, sum, perProcessMs: side.results.map((r) => r.ms), tokenIds };
}

const sameCount = (a: number[][], b: number[][]) => a.filter((t, i) => JSON.stringify(t) === JSON.stringify(b[i])).length;

function ourRow(label: string, r: Awaited<ReturnType<typeof runOurs>>, s: OurSetting, base: number[][] | null): PeerSectionRow {
  const sum = (k: keyof WorkerStats) => r.stats.reduce((a, x) => a + (x[k] as number), 0);
  return {
    label,
    requests: r.tokenIds.length,
    tokens: r.tokens,
    ms: r.ms,
    tokens_per_s: (r.tokens * 1000) / r.ms,
    warm_up_ms: r.warmUpMs,
    padding_waste: 1 - sum('prompt_tokens') / sum('prompt_bucket_tokens'),
    identical_to_ours_default: base ? `${sameCount(r.tokenIds, base)}/${r.tokenIds.length}` : null,
    load: r.load,
    status: r.status,
    kernels: r.stats.map((x) => `${x.kernels ?? '?'}, ${x.threads ?? '?'} thread(s)`),
    batch_sizes: s.batchSizes,
    prompt_buckets: formatBucketPolicy(s.policies.prompt),
    new_token_buckets: formatBucketPolicy(s.policies.newTokens ?? s.policies.prompt),
    worker_flags: s.flags,
    keys: r.keys,
    batch_fill: sum('rows') / (sum('rows') + sum('dummy_rows')),
    busy_share: sum('busy_ms') / (r.stats.length * r.ms),
    retraces: r.stats.map((x) => x.retraces),
    per_worker: r.stats.map((x) => ({
      warm_ms: x.warm_ms,
      busy_ms: x.busy_ms,
      tokens: x.tokens,
      batches: x.batches,
      rows: x.rows,
      dummy_rows: x.dummy_rows,
    })),
  };
}

function peerRow(B: number, r: Awaited<ReturnType<typeof runPeerJob>>, base: number[][] | null): PeerSectionRow {
  const tokens = r.sum('tokens');
  return {
    label: `peer, B=${B}`,
    requests: r.tokenIds.length,
    tokens,
    ms: r.ms,
    tokens_per_s: (tokens * 1000) / r.ms,
    warm_up_ms: r.warmUpMs,
    padding_waste: 1 - r.sum('prompt_tokens') / r.sum('padded_prompt_tokens'),
    identical_to_ours_default: base ? `${sameCount(r.tokenIds, base)}/${r.tokenIds.length}` : null,
    load: r.load,
    batch: B,
    batches: r.sum('batches'),
    // generated positions that a request did not need (past its own max_new_tokens or EOS)
    decode_waste: 1 - tokens / r.sum('row_steps'),
    per_process_ms: r.perProcessMs,
    ready: r.ready,
  };
}

/** The tuned setting a user can pick from the docs: planned prompt buckets, larger batches, room for their caches. */
function tunedSetting(job: JobRequest[]): OurSetting {
  const k = Number(process.env.BENCH_PEER_TUNED_BUCKETS ?? 4);
  const plan = planBuckets(
    job.map((r) => r.ids.length),
    k,
  );
  return {
    label: 'tuned',
    prefix: 'peer-tuned',
    batchSizes: parseBatchSizes(process.env.BENCH_PEER_TUNED_SIZES ?? '1,2,4,8,16'),
    policies: { prompt: { kind: 'list', sizes: plan.buckets }, newTokens: DEFAULT_BUCKET_POLICY },
    flags: ['--cache-mb', '8192'],
  };
}

export interface PeerSection {
  report: Record<string, unknown>;
  rows: [string, string, string][];
}

/** Runs the section: our defaults, our tuned setting, then the peer at each of its batch sizes. */
export async function peerSection(
  redis: LocalRedis,
  setup: { source: string; onnx: string },
  nWorkers: number,
  tmp: string,
): Promise<PeerSection> {
  const info = await loadModelInfo({ name: MODEL, dir: setup.source });
  const job = peerJobRequests(Number(process.env.BENCH_PEER_REQUESTS ?? 256), info.vocabSize);
  const log = (m: string) => process.stderr.write(`  ${m}\n`);
  const a = info.arch;
  process.stderr.write(
    `against the peer: ${job.length} requests, ${setup.source} (${a.layers} layers, ${a.hidden} wide, ${a.heads} heads)\n`,
  );
  const settings: OurSetting[] = [
    { label: 'defaults', prefix: 'peer-default', batchSizes: DEFAULT_BATCH_SIZES, policies: DEFAULT_POLICIES, flags: [] },
    tunedSetting(job),
  ];
  const peerBatches = parseBatchSizes(process.env.BENCH_PEER_BATCHES ?? '8,16');
  const ours: PeerSectionRow[] = [];
  const peers: PeerSectionRow[] = [];
  let base: number[][] | null = null;
  // our rows and the peer's taken in turn, so that a change of outside load hits both sides alike
  for (let i = 0; i < Math.max(settings.length, peerBatches.length); i++) {
    const s = settings[i];
    if (s) {
      const r = await runOurs(redis, setup.source, job, s, nWorkers);
      ours.push(ourRow(`batchgen, Redis + ${nWorkers} workers, ${s.label}`, r, s, base));
      base ??= r.tokenIds;
      log(`${s.label}: ${r.tokens} tokens in ${r.ms.toFixed(0)} ms (warm-up ${(r.warmUpMs / 1000).toFixed(1)} s)`);
    }
    const B = peerBatches[i];
    if (B) {
      const r = await runPeerJob(setup.onnx, job, B, nWorkers, tmp);
      peers.push(peerRow(B, r, base));
      log(`peer B=${B}: ${r.sum('tokens')} tokens in ${r.ms.toFixed(0)} ms (warm-up ${(r.warmUpMs / 1000).toFixed(1)} s)`);
    }
  }
  return summarize(job, setup, nWorkers, ours, peers);
}

function summarize(
  job: JobRequest[],
  setup: { source: string; onnx: string },
  nWorkers: number,
  ours: PeerSectionRow[],
  peers: PeerSectionRow[],
): PeerSection {
  const best = (rs: PeerSectionRow[]) => rs.reduce((a, b) => (b.tokens_per_s > a.tokens_per_s ? b : a));
  const peerBest = best(peers);
  const ratio = (r: PeerSectionRow) => r.tokens_per_s / peerBest.tokens_per_s;
  const report = {
    requests: job.length,
    source: setup.source,
    onnx: setup.onnx,
    processes: nWorkers,
    prompt_tokens: job.reduce((s, r) => s + r.ids.length, 0),
    max_new_tokens: job.reduce((s, r) => s + r.maxNew, 0),
    rows: [...ours, ...peers],
    peer_best: peerBest.label,
    ratio_defaults: ratio(ours[0]),
    ratio_tuned: ratio(ours[ours.length - 1]),
    target: 1.5,
  };
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const rows = [...ours, ...peers].map((r): [string, string, string] => [
    r.label,
    `${r.tokens_per_s.toFixed(1)} tokens/s`,
    `${r.requests} requests, ${r.tokens} tokens, ${(r.ms / 1000).toFixed(1)} s (warm-up ${(r.warm_up_ms / 1000).toFixed(1)} s), ` +
      `prompt padding ${pct(r.padding_waste)}, ` +
      (typeof r.busy_share === 'number'
        ? `busy ${pct(r.busy_share)}, fill ${pct(r.batch_fill as number)}, `
        : `decode waste ${pct(r.decode_waste as number)}, `) +
      (r.identical_to_ours_default ? `same ids as defaults ${r.identical_to_ours_default}` : 'the reference for same ids') +
      (r.load ? `, other load ${r.load.other_cores.toFixed(2)} cores` : ''),
  ]);
  for (const r of ours) rows.push([`  ${r.label.split(', ').pop()} / ${peerBest.label}`, `${ratio(r).toFixed(2)}×`, 'target ≥ 1.5×']);
  return { report, rows };
}
