/** Flags and helpers shared by the queue commands (submit, status, results, cancel, worker, demo). */
import type { ParseArgsConfig } from 'node:util';
import { BatchgenError } from '../shared/errors.js';

/** --redis URL, --prefix P, --hash-tag: where the queues and batch records live. */
export const REDIS_FLAG_OPTIONS = {
  redis: { type: 'string' },
  prefix: { type: 'string' },
  'hash-tag': { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

/** What each of the Redis flags means (typed by the option table, so a new flag needs its line). */
export const REDIS_FLAG_HELP: Record<keyof typeof REDIS_FLAG_OPTIONS, string> = {
  redis: '--redis URL      Redis (default REDIS_URL, else redis://127.0.0.1:6379)',
  prefix: '--prefix P       first part of every key (default BATCHGEN_PREFIX, else batchgen)',
  'hash-tag': '--hash-tag       write the prefix as {P}, one Redis Cluster slot for every key',
};

/** The help lines of the Redis flags, appended to the --help of the commands that take them. */
export function redisFlagsHelp(): string {
  return `Redis flags:\n${Object.values(REDIS_FLAG_HELP)
    .map((l) => `  ${l}`)
    .join('\n')}\n`;
}

export function keyspaceFrom(values: { prefix?: string; 'hash-tag'?: boolean }): { prefix?: string; hashTag?: boolean } {
  return { prefix: values.prefix, hashTag: values['hash-tag'] };
}

/** A flag that must be a number in a range. */
export function numberFlag(name: string, v: string | undefined, opts: { min?: number; integer?: boolean } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || (opts.integer && !Number.isInteger(n)) || (opts.min !== undefined && n < opts.min)) {
    throw new BatchgenError(
      'invalid_request',
      `--${name} ${v}: expected ${opts.integer ? 'an integer' : 'a number'}${opts.min !== undefined ? ` ≥ ${opts.min}` : ''}`,
    );
  }
  return n;
}

/** Writes to stdout and resolves once it is flushed (so that exiting right after loses nothing). */
export function out(text: string): Promise<void> {
  return new Promise((resolve) => process.stdout.write(text, () => resolve()));
}

export function err(text: string): void {
  process.stderr.write(text);
}

/** A one-line progress bar for a terminal. */
export function progressBar(done: number, total: number, width = 30): string {
  const f = total > 0 ? Math.min(1, done / total) : 0;
  const n = Math.round(f * width);
  return `[${'#'.repeat(n)}${'.'.repeat(width - n)}] ${done}/${total}`;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/**
 * The options of a parseArgs table that a usage text does not mention as `--name` (`help` aside,
 * which every command takes). Each command's --help is checked against its table with this.
 */
export function undocumentedOptions(usage: string, options: NonNullable<ParseArgsConfig['options']>): string[] {
  return Object.keys(options).filter(
    (name) => name !== 'help' && !new RegExp(`--${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![A-Za-z0-9-])`).test(usage),
  );
}

/** The usage line of the Redis flags, for the commands that take them. */
export const REDIS_FLAGS_USAGE = '[--redis URL] [--prefix P] [--hash-tag]';

/** On a terminal, a line rewritten in place; elsewhere, one line per change. Returns what to write (may be ''). */
export function progressWrite(prev: string | null, line: string, tty: boolean): string {
  if (line === prev) return '';
  return tty ? `\r\x1b[K${line}` : `${line}\n`;
}
