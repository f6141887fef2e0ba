/** Allowed batch sizes: each variant is compiled at one of them, and a batch of n rows runs on the smallest ≥ n. */

export const DEFAULT_BATCH_SIZES: readonly number[] = [1, 2, 4, 8];

/** Checks and sorts batch sizes (positive integers, no duplicates). Throws naming the value. */
export function checkBatchSizes(sizes: number[]): number[] {
  if (sizes.length === 0) throw new Error('batch sizes: at least one size is needed');
  for (const s of sizes)
    if (!Number.isInteger(s) || s < 1 || s > 1024) throw new Error(`batch size ${s}: expected an integer from 1 to 1024`);
  return [...new Set(sizes)].sort((a, b) => a - b);
}

/** Parses `1,2,4,8`. */
export function parseBatchSizes(text: string): number[] {
  return checkBatchSizes(text.split(',').map((s) => Number(s.trim())));
}

/** The smallest allowed batch size ≥ n (n must not exceed the largest). */
export function paddedBatchSize(n: number, sizes: number[]): number {
  const b = sizes.find((s) => s >= n);
  if (b === undefined) throw new Error(`${n} rows exceed the largest batch size ${sizes[sizes.length - 1]}`);
  return b;
}
