/** Readers of config.json fields: each fails with a ModelFormatError naming the file and the field. */
import { ModelFormatError } from '../shared/errors.js';

export function configFields(file: string) {
  const fail = (problem: string): never => {
    throw new ModelFormatError(file, problem);
  };
  return {
    fail,
    positiveInt(key: string, value: unknown): number {
      if (value === undefined || value === null) fail(`missing required field "${key}"`);
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0)
        fail(`"${key}" must be a positive integer, got ${JSON.stringify(value)}`);
      return value as number;
    },
    positiveNumber(key: string, value: unknown): number {
      if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value))
        fail(`"${key}" must be a positive number, got ${JSON.stringify(value)}`);
      return value as number;
    },
    flag(key: string, value: unknown): boolean {
      if (typeof value !== 'boolean') fail(`"${key}" must be true or false, got ${JSON.stringify(value)}`);
      return value as boolean;
    },
  };
}
