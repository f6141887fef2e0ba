/**
 * Device bytes that a process's compiled variants may hold together (KV caches and per-step
 * workspace; weights not included): the compile cache's budget, and the worker's `--cache-mb`.
 */
export const DEFAULT_VARIANT_BUDGET_BYTES = 2 * 1024 ** 3;
