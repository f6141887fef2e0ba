/**
 * One process of the peer's side of the system benchmark: transformers.js (npm
 * @huggingface/transformers, on onnxruntime-node) running a share of the job the way a JavaScript
 * user would batch it: requests sorted by prompt length, cut into batches of B, left padded, one
 * greedy `model.generate` per batch to the batch's longest max_new_tokens.
 *
 * Usage: node dist/bench/peer-jobs.js ONNX_DIR JOBS.json
 *   JOBS.json: {"batch": B, "threads": T, "requests": [{"ids": [...], "maxNew": n}, ...]}
 * Prints {"ready": true, ...} after loading and one warm-up generate, waits for a line on stdin,
 * then prints one JSON line: tokens, ms, token ids per request (in the file's order), padding.
 * The package is loaded from $BENCH_PEER_DIR (default /tmp/peer), where
 * `ONNXRUNTIME_NODE_INSTALL=skip npm install @huggingface/transformers@4.3.1` was run.
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, join, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

export const PEER_PACKAGE = 'node_modules/@huggingface/transformers/dist/transformers.node.mjs';
export const peerDir = (): string => process.env.BENCH_PEER_DIR ?? '/tmp/peer';

interface PeerRequest {
  ids: number[];
  maxNew: number;
}

/** The few parts of transformers.js used here. */
interface TjsTensor {
  dims: number[];
  tolist(): (bigint | number)[][];
}
interface TjsModel {
  generate(opts: Record<string, unknown>): Promise<TjsTensor>;
}
interface Tjs {
  env: { allowRemoteModels: boolean; allowLocalModels: boolean; localModelPath: string };
  AutoModelForCausalLM: { from_pretrained(id: string, opts: Record<string, unknown>): Promise<TjsModel> };
  Tensor: new (type: string, data: BigInt64Array, dims: number[]) => unknown;
}

const PAD = 50256;

/** Left padded input_ids and attention_mask (pad id 50256, mask 0), and the padded length. */
function leftPad(T: Tjs, prompts: number[][]): { input_ids: unknown; attention_mask: unknown; L: number } {
  const L = Math.max(...prompts.map((p) => p.length));
  const ids = new BigInt64Array(prompts.length * L).fill(BigInt(PAD));
  const mask = new BigInt64Array(prompts.length * L);
  prompts.forEach((p, r) => {
    p.forEach((t, i) => {
      ids[r * L + L - p.length + i] = BigInt(t);
      mask[r * L + L - p.length + i] = 1n;
    });
  });
  return {
    input_ids: new T.Tensor('int64', ids, [prompts.length, L]),
    attention_mask: new T.Tensor('int64', mask, [prompts.length, L]),
    L,
  };
}

/** What a request counts: its new tokens up to its own max_new_tokens, and up to an EOS (included), as the workers count. */
export function usefulTokens(row: number[], maxNew: number, eos: number): number[] {
  const mine = row.slice(0, maxNew);
  const e = mine.indexOf(eos);
  return e >= 0 ? mine.slice(0, e + 1) : mine;
}

/** Indices of the requests, sorted by prompt length, cut into batches of at most b. */
export function peerBatches(reqs: PeerRequest[], b: number): number[][] {
  const order = reqs.map((_, i) => i).sort((x, y) => reqs[x].ids.length - reqs[y].ids.length || x - y);
  const out: number[][] = [];
  for (let i = 0; i < order.length; i += b) out.push(order.slice(i, i + b));
  return out;
}

async function loadPeer(dir: string, threads: number): Promise<{ T: Tjs; model: TjsModel }> {
  const T = (await import(pathToFileURL(join(peerDir(), PEER_PACKAGE)).href)) as Tjs;
  T.env.allowRemoteModels = false;
  T.env.allowLocalModels = true;
  T.env.localModelPath = dirname(dir) + sep;
  const model = await T.AutoModelForCausalLM.from_pretrained(basename(dir), {
    local_files_only: true,
    dtype: 'fp32',
    device: 'cpu',
    session_options: { intraOpNumThreads: threads, interOpNumThreads: threads },
  });
  return { T, model };
}

async function main(): Promise<void> {
  const [dir, jobsFile] = process.argv.slice(2);
  const job = JSON.parse(readFileSync(jobsFile, 'utf8')) as { batch: number; threads: number; requests: PeerRequest[] };
  const eos = (JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8')) as { eos_token_id?: number }).eos_token_id ?? PAD;
  const t0 = performance.now();
  const { T, model } = await loadPeer(dir, job.threads);
  const loadMs = performance.now() - t0;
  const batches = peerBatches(job.requests, job.batch);
  const gen = (idx: number[], maxNew: number) => {
    const { L, ...inputs } = leftPad(
      T,
      idx.map((i) => job.requests[i].ids),
    );
    return model.generate({ ...inputs, max_new_tokens: maxNew, do_sample: false, num_beams: 1 }).then((out) => ({ out, L }));
  };
  // warm-up: the longest prompts, two new tokens (onnxruntime sizes its buffers on first use)
  const w0 = performance.now();
  await gen(batches[batches.length - 1], 2);
  const warmMs = performance.now() - w0;
  process.stdout.write(`${JSON.stringify({ ready: true, load_ms: loadMs, warm_ms: warmMs })}\n`);
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()));

  const tokenIds: number[][] = job.requests.map(() => []);
  let promptTokens = 0;
  let paddedPromptTokens = 0;
  let rowSteps = 0;
  const r0 = performance.now();
  for (const idx of batches) {
    const { out, L } = await gen(idx, Math.max(...idx.map((i) => job.requests[i].maxNew)));
    const rows = out.tolist();
    idx.forEach((i, r) => {
      tokenIds[i] = usefulTokens(rows[r].slice(L).map(Number), job.requests[i].maxNew, eos);
      promptTokens += job.requests[i].ids.length;
    });
    paddedPromptTokens += idx.length * L;
    rowSteps += idx.length * (out.dims[1] - L);
  }
  const ms = performance.now() - r0;
  const tokens = tokenIds.reduce((s, t) => s + t.length, 0);
  process.stdout.write(
    `${JSON.stringify({ tokens, ms, batches: batches.length, prompt_tokens: promptTokens, padded_prompt_tokens: paddedPromptTokens, row_steps: rowSteps, token_ids: tokenIds })}\n`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
