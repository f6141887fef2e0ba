import { BatchgenError } from './errors.js';

/**
 * Bucket policies round a length up to one of a few fixed sizes, so that a compiled function sees
 * few shapes. `pow2` (default): 16, 32, 64, ...; `multiple:K`: K, 2K, 3K, ...; a list: those sizes.
 */
export type BucketPolicy =
  | { kind: 'pow2'; min: number }
  | { kind: 'multiple'; step: number }
  | { kind: 'list'; sizes: number[] };

export const DEFAULT_BUCKET_POLICY: BucketPolicy = { kind: 'pow2', min: 16 };

/** Parses `pow2`, `pow2:MIN`, `multiple:K` or `16,32,64`. */
export function parseBucketPolicy(text: string): BucketPolicy {
  const t = text.trim();
  const bad = () => new BatchgenError('invalid_request', `bucket policy "${text}": expected pow2, pow2:MIN, multiple:K or a list like 16,32,64`);
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
