import { BatchgenError } from './errors.js';

/**
 * Bucket policies round a length up to one of a few fixed sizes, so that a compiled function sees
 * few shapes. `pow2` (default): 16, 32, 64, ...; `multiple:K`: K, 2K, 3K, ...; a list: those sizes.
 */
export type BucketPolicy = { kind: 'pow2'; min: number } | { kind: 'multiple'; step: number } | { kind: 'list'; sizes: number[] };

export const DEFAULT_BUCKET_POLICY: BucketPolicy = { kind: 'pow2', min: 16 };

/** Parses `pow2`, `pow2:MIN`, `multiple:K` or `16,32,64`. */
export function parseBucketPolicy(text: string): BucketPolicy {
  const t = text.trim();
  const bad = () =>
    new BatchgenError('invalid_request', `bucket policy "${text}": expected pow2, pow2:MIN, multiple:K or a list like 16,32,64`);
  if (t === 'pow2') return DEFAULT_BUCKET_POLICY;
  const m = /^(pow2|multiple):(\d+)$/.exec(t);
  if (m) {
    const n = Number(m[2]);
    if (n < 1) throw bad();
    return m[1] === 'pow2' ? { kind: 'pow2', min: n } : { kind: 'multiple', step: n };
  }
  if (/^\d+(,\d+)*$/.test(t)) {
    const sizes = [...new Set(t.split(',').map(Number))].sort((a, b) => a - b);
    if (sizes[0] < 1) throw bad();
    return { kind: 'list', sizes };
  }
  throw bad();
}

export function formatBucketPolicy(p: BucketPolicy): string {
  if (p.kind === 'pow2') return p.min === 16 ? 'pow2' : `pow2:${p.min}`;
  if (p.kind === 'multiple') return `multiple:${p.step}`;
  return p.sizes.join(',');
}

/**
 * The smallest bucket ≥ n and ≤ max, or null when none fits. `max` is the model's context: a
 * bucket never exceeds it, so the last bucket of a policy may be `max` itself.
 */
export function bucketFor(n: number, policy: BucketPolicy, max: number): number | null {
  if (!Number.isInteger(n) || n < 1 || n > max) return null;
  let b: number;
  if (policy.kind === 'pow2') {
    b = policy.min;
    while (b < n) b *= 2;
  } else if (policy.kind === 'multiple') {
    b = Math.ceil(n / policy.step) * policy.step;
  } else {
    const found = policy.sizes.find((s) => s >= n);
    if (found === undefined) return null;
    b = found;
  }
  return Math.min(b, max);
}

/** Rounds n up to a multiple of g. */
const roundUp = (n: number, g: number) => Math.ceil(n / g) * g;

/** The finest rounding tried before exact sizes, for keys capped at the context. */
export const CAPPED_GRANULARITY = 16;

/**
 * A prompt and new-token bucket pair that a model of `ctx` positions can serve (P + N ≤ ctx), from
 * the policies' buckets P0 ≥ p and N0 ≥ n, for a request with p + n ≤ ctx. In order:
 * (P0, N0) when it fits; P capped at ctx - N0 when that still holds the prompt; N capped at ctx - P0
 * when that still holds max_new_tokens; else, near the context, N rounded up to a multiple of 16,
 * 8, 4, 2, 1 (the first whose cap on P still holds the prompt; 1 always does). A request with at
 * least g - 1 tokens of slack (ctx - p - n) is served at granularity g or coarser.
 */
export function servableBuckets(p: number, n: number, ctx: number, P0: number, N0: number): { P: number; N: number } | null {
  if (p < 1 || n < 1 || p + n > ctx || P0 < p || N0 < n) return null;
  if (P0 + N0 <= ctx) return { P: P0, N: N0 };
  if (ctx - N0 >= p) return { P: ctx - N0, N: N0 };
  if (ctx - P0 >= n) return { P: P0, N: ctx - P0 };
  for (let g = CAPPED_GRANULARITY; g >= 1; g /= 2) {
    const N = Math.min(roundUp(n, g), N0);
    if (ctx - N >= p) return { P: Math.min(P0, ctx - N), N };
  }
  return null; // unreachable: g = 1 gives N = n and ctx - n ≥ p
}
