/**
 * Prompt-bucket planning: given the prompt lengths of a workload, the at most K bucket sizes that
 * minimize padded tokens (each prompt is padded up to the smallest bucket that holds it), and the
 * padding waste of a plan. Pure functions.
 */
import { bucketFor, type BucketPolicy } from '../shared/buckets.js';
import { compileKeyFor } from '../shared/compile-key.js';

export interface PaddingReport {
  /** real prompt tokens */
  real: number;
  /** tokens after padding each prompt to its bucket */
  padded: number;
  /** (padded - real) / padded: the share of prompt compute spent on padding */
  waste: number;
}

export function paddingOf(lengths: number[], bucketOf: (n: number) => number | null): PaddingReport {
  let real = 0;
  let padded = 0;
  for (const n of lengths) {
    const b = bucketOf(n);
    if (b === null) throw new Error(`no bucket holds a prompt of ${n} tokens`);
    real += n;
    padded += b;
  }
  return { real, padded, waste: padded === 0 ? 0 : (padded - real) / padded };
}

export function policyPadding(lengths: number[], policy: BucketPolicy, max: number): PaddingReport {
  return paddingOf(lengths, (n) => bucketFor(n, policy, max));
}

export function listPadding(lengths: number[], buckets: number[]): PaddingReport {
  const sorted = [...buckets].sort((a, b) => a - b);
  return paddingOf(lengths, (n) => sorted.find((b) => b >= n) ?? null);
}

export interface BucketPlan extends PaddingReport {
  /** bucket sizes, ascending; the last is the longest prompt */
  buckets: number[];
}

/**
 * The optimal plan of at most k buckets (dynamic programming over the distinct lengths:
 * O(k · m²) for m distinct lengths). Every bucket is one of the observed lengths, since moving a
 * bucket down to the longest prompt it holds never adds padding.
 */
export function planBuckets(lengths: number[], k: number): BucketPlan {
  if (!Number.isInteger(k) || k < 1) throw new Error(`max buckets ${k}: expected a positive integer`);
  if (lengths.length === 0) return { buckets: [], real: 0, padded: 0, waste: 0 };
  for (const n of lengths) if (!Number.isInteger(n) || n < 1) throw new Error(`prompt length ${n}: expected a positive integer`);
  const counts = new Map<number, number>();
  for (const n of lengths) counts.set(n, (counts.get(n) ?? 0) + 1);
  const v = [...counts.keys()].sort((a, b) => a - b);
  const m = v.length;
  // prefix sums of counts and of tokens over distinct lengths
  const C = new Float64Array(m + 1);
  const S = new Float64Array(m + 1);
  for (let i = 0; i < m; i++) {
    const c = counts.get(v[i])!;
    C[i + 1] = C[i] + c;
    S[i + 1] = S[i] + c * v[i];
  }
  // cost of one bucket v[j] holding distinct lengths i..j: padded tokens minus real tokens
  const cost = (i: number, j: number) => v[j] * (C[j + 1] - C[i]) - (S[j + 1] - S[i]);
  const K = Math.min(k, m);
  // best[b][j]: least padding covering lengths 0..j with b buckets, the last being v[j]
  let prev = new Float64Array(m);
  const choice: Int32Array[] = [];
  for (let j = 0; j < m; j++) prev[j] = cost(0, j);
  choice.push(new Int32Array(m).fill(-1));
  for (let b = 2; b <= K; b++) {
    const cur = new Float64Array(m).fill(Infinity);
    const ch = new Int32Array(m).fill(-1);
    for (let j = 0; j < m; j++) {
      cur[j] = prev[j];
      ch[j] = -2; // fewer buckets is as good
      for (let i = 0; i < j; i++) {
        const c = prev[i] + cost(i + 1, j);
        if (c < cur[j]) {
          cur[j] = c;
          ch[j] = i;
        }
      }
    }
    choice.push(ch);
    prev = cur;
  }
  // walk back from the last length with K buckets
  const buckets: number[] = [];
  let j = m - 1;
  for (let b = K; b >= 1 && j >= 0; b--) {
    const ch = choice[b - 1][j];
    if (ch === -2) continue; // this layer added nothing: same as b-1 buckets ending at j
    buckets.push(v[j]);
    if (ch === -1) break;
    j = ch;
  }
  buckets.reverse();
  return { buckets, ...listPadding(lengths, buckets) };
}

/** One request as planning sees it: its prompt tokens and its max_new_tokens. */
export interface PlannedRequest {
  prompt: number;
  maxNew: number;
}

export interface ServableKeys extends PaddingReport {
  /** the distinct (P, N) bucket pairs the requests get, every one with P + N ≤ the context */
  keys: { P: number; N: number }[];
}

/**
 * The bucket pairs that requests get under a prompt policy and a new-token policy, computed as the
 * producer computes them (compileKeyFor, capped so that P + N ≤ ctx), and the prompt padding of
 * those keys. Every request must fit (prompt + maxNew ≤ ctx).
 */
export function servableKeys(requests: PlannedRequest[], ctx: number, prompt: BucketPolicy, newTokens: BucketPolicy): ServableKeys {
  const keys = new Map<string, { P: number; N: number }>();
  let real = 0;
  let padded = 0;
  for (const r of requests) {
    const k = compileKeyFor('plan', r.prompt, { max_new_tokens: r.maxNew, do_sample: false, num_beams: 1 }, ctx, prompt, newTokens);
    keys.set(`${k.P}:${k.N}`, { P: k.P, N: k.N });
    real += r.prompt;
    padded += k.P;
  }
  const sorted = [...keys.values()].sort((a, b) => a.P - b.P || a.N - b.N);
  return { keys: sorted, real, padded, waste: padded === 0 ? 0 : (padded - real) / padded };
}
