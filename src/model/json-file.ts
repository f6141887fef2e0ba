import * as fs from 'node:fs';
import { ModelFormatError } from '../shared/errors.js';

/**
 * Reads a JSON object from a model folder's file. A missing file is null when not required; every
 * other problem is a ModelFormatError naming the file.
 */
export function readJsonObject(file: string, required: boolean): Record<string, unknown> | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf-8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      if (!required) return null;
      throw new ModelFormatError(file, 'file not found');
    }
    throw new ModelFormatError(file, `cannot read (${(e as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ModelFormatError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ModelFormatError(file, 'not a JSON object');
  return value as Record<string, unknown>;
}
