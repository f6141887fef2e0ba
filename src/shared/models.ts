/** Model lists (`NAME=DIR`), from flags or BATCHGEN_MODELS. What a folder holds is read in src/model/. */
import * as path from 'node:path';
import { BatchgenError } from './errors.js';
import { checkModelName, modelNameForFolder } from './keys.js';

export interface ModelSpec {
  name: string;
  dir: string;
}

/**
 * Parses `NAME=DIR` entries (flags first, then BATCHGEN_MODELS as `name=dir,name=dir`). A bare DIR
 * takes the folder's base name as its name. A name given twice is an error.
 */
export function parseModelSpecs(flags: string[], env: string | undefined = process.env.BATCHGEN_MODELS): ModelSpec[] {
  const entries = [...flags];
  if (entries.length === 0 && env)
    entries.push(
      ...env
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    );
  const out: ModelSpec[] = [];
  for (const e of entries) {
    const i = e.indexOf('=');
    const name = i > 0 ? e.slice(0, i) : modelNameForFolder(e);
    const dir = i > 0 ? e.slice(i + 1) : e;
    if (!dir) throw new BatchgenError('invalid_request', `model "${e}": expected NAME=DIR`);
    checkModelName(name);
    if (out.some((m) => m.name === name)) throw new BatchgenError('invalid_request', `model name "${name}" given twice`);
    out.push({ name, dir: path.resolve(dir) });
  }
  return out;
}
