/**
 * The peer, measured in the same run as the compiler benchmark when asked: transformers.js on
 * onnxruntime-node on the same random GPT-2 weights, through an outside harness (`run_tjs.mjs
 * bench`, which prints one JSON object with medians), as its own node process per case.
 *
 * Env: BENCH_PEER_RUNNER (path to run_tjs.mjs) and BENCH_PEER_MODEL (the ONNX export of the
 * benchmark's model folder); without both, no peer rows.
 */
import { spawnSync } from 'node:child_process';

export interface PeerRow {
  backend: 'onnxruntime-node';
  kernels: 'transformers.js';
  threads: number;
  B: number;
  prefill_ms: number;
  decode_ms_per_step: number;
  ms_per_token: number;
  tokens_per_s: number;
}

export function peerConfigured(): boolean {
  return !!process.env.BENCH_PEER_RUNNER && !!process.env.BENCH_PEER_MODEL;
}

/** One case: B rows, P-token prompts, N new tokens, greedy, onnxruntime on `threads` threads. */
export function runPeer(B: number, P: number, N: number, threads: number): PeerRow {
  const args = [process.env.BENCH_PEER_RUNNER!, 'bench', process.env.BENCH_PEER_MODEL!];
  args.push('--batch', String(B), '--prompt-len', String(P), '--new', String(N), '--runs', '3', '--threads', String(threads));
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 900_000 });
  if (r.status !== 0) throw new Error(`peer B=${B} threads=${threads} exited ${r.status}: ${r.stderr.slice(-500)}`);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!).median;
  return {
    backend: 'onnxruntime-node',
    kernels: 'transformers.js',
    threads,
    B,
    prefill_ms: Math.round(m.prefill_ms),
    decode_ms_per_step: +m.decode_ms_per_step.toFixed(1),
    ms_per_token: +(m.decode_ms_per_step / B).toFixed(2),
    tokens_per_s: +m.tok_per_s.toFixed(1),
  };
}
