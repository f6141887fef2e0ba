/** `batchgen make-model --out DIR [...]`: writes a GPT-2 model folder with seeded random weights. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { makeModel, resolveOptions, type MakeModelOptions } from '../compiler/make-model.js';
import { BatchgenError } from '../shared/errors.js';

const USAGE = `usage: batchgen make-model --out DIR [--layers N] [--heads N] [--embd N] [--positions N]
                           [--seed N] [--dtype F32|F16|BF16] [--vocab N] [--force]
Writes config.json, model.safetensors (seeded random weights), tokenizer.json (GPT-2's) and
generation_config.json. Defaults: 2 layers, 2 heads, embd 64, 128 positions, seed 1, F32, vocab 50257.
Refuses a DIR that exists and is not an empty folder, unless --force (which overwrites its files).`;

/** Why `out` may not be written without --force (null when it may: absent, or an empty folder). */
export function outFolderProblem(out: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  if (!st.isDirectory()) return `${out} exists and is not a folder`;
  const n = fs.readdirSync(out).length;
  return n === 0 ? null : `${out} is not empty (${n} entr${n === 1 ? 'y' : 'ies'}): pass --force to overwrite its files`;
}

const INT_FLAGS = ['layers', 'heads', 'embd', 'positions', 'seed', 'vocab'] as const;

export async function makeModelCommand(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        out: { type: 'string' },
        layers: { type: 'string' },
        heads: { type: 'string' },
        embd: { type: 'string' },
        positions: { type: 'string' },
        seed: { type: 'string' },
        dtype: { type: 'string' },
        vocab: { type: 'string' },
        force: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    process.stderr.write(`make-model: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (typeof values.out !== 'string' || values.out === '') {
    process.stderr.write(`make-model: --out DIR is required\n${USAGE}\n`);
    return 2;
  }
  const opts: MakeModelOptions = { out: path.resolve(values.out) };
  for (const flag of INT_FLAGS) {
    const raw = values[flag];
    if (raw === undefined) continue;
    const n = Number(raw);
    if (typeof raw !== 'string' || !/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || (flag !== 'seed' && n <= 0)) {
      process.stderr.write(
        `make-model: --${flag} must be a ${flag === 'seed' ? 'non-negative' : 'positive'} integer, got "${String(raw)}"\n`,
      );
      return 2;
    }
    opts[flag] = n;
  }
  if (values.dtype !== undefined) {
    const d = String(values.dtype).toUpperCase();
    if (d !== 'F32' && d !== 'F16' && d !== 'BF16') {
      process.stderr.write(`make-model: --dtype must be F32, F16 or BF16, got "${String(values.dtype)}"\n`);
      return 2;
    }
    opts.dtype = d;
  }
  try {
    resolveOptions(opts);
  } catch (e) {
    process.stderr.write(`make-model: ${(e as Error).message}\n`);
    return 2; // a RangeError: options that do not fit together
  }
  const problem = outFolderProblem(opts.out);
  if (problem !== null && values.force !== true) throw new BatchgenError('already_exists', problem);
  await makeModel(opts);
  process.stdout.write(`${opts.out}\n`);
  return 0;
}
