/** Assertions on ModelFormatError (message starts with the file, then the problem) and a JSON file editor. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { ModelFormatError } from '../../src/shared/errors.js';

function check(e: unknown, file: string, re: RegExp): true {
  assert.ok(e instanceof ModelFormatError, `expected ModelFormatError, got ${String(e)}`);
  assert.ok(e.message.startsWith(file), `message should start with ${file}: ${e.message}`);
  assert.match(e.message, re);
  return true;
}

/** Asserts a ModelFormatError whose message starts with `file` and matches `re`. */
export async function rejectsFormat(p: Promise<unknown>, file: string, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => check(e, file, re));
}

export function throwsFormat(fn: () => unknown, file: string, re: RegExp): void {
  assert.throws(fn, (e: unknown) => check(e, file, re));
}

/** Rewrites a JSON file through `edit`. */
export function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(fs.readFileSync(file, 'utf-8'));
  edit(j);
  fs.writeFileSync(file, JSON.stringify(j));
}
