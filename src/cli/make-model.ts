/** `batchgen make-model --out DIR [--arch gpt2|llama|qwen2|mistral] [...]`: a model folder with seeded random weights. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { type Arch, makeModel, resolveOptions, type MakeModelOptions } from '../compiler/make-model.js';
import { ARCHS } from '../compiler/model-files.js';
import { BatchgenError } from '../shared/errors.js';

const USAGE = `usage: batchgen make-model --out DIR [--arch gpt2|llama|qwen2|mistral] [--layers N] [--heads N]
                           [--kv-heads N] [--embd N] [--intermediate N] [--positions N] [--seed N]
                           [--dtype F32|F16|BF16] [--vocab N] [--tied | --untied] [--rope-scaling llama3]
                           [--sliding-window N] [--shards N] [--chat-template chatml|llama3] [--force]
Writes config.json, model.safetensors (seeded random weights; --shards N: N shards and
model.safetensors.index.json), tokenizer.json (GPT-2's BPE; the Llama family adds its special tokens)
and generation_config.json (Llama family: tokenizer_config.json too, with --chat-template a chat
template in it), as Hugging Face lays them out for the architecture.
Defaults: gpt2, 2 layers, 2 heads (Llama family: kv heads = heads / 2), embd 64, intermediate
8/3 x embd (Llama family), 128 positions, seed 1, F32, vocab 50257 (Llama family 50264), tied for
qwen2, untied for llama and mistral, no rope scaling, no sliding window, one file.
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

const INT_FLAGS = {
  layers: 'layers',
  heads: 'heads',
  'kv-heads': 'kvHeads',
  embd: 'embd',
  intermediate: 'intermediate',
  positions: 'positions',
  seed: 'seed',
  vocab: 'vocab',
  'sliding-window': 'slidingWindow',
  shards: 'shards',
} as const;

export async function makeModelCommand(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        out: { type: 'string' },
        arch: { type: 'string' },
        ...Object.fromEntries(Object.keys(INT_FLAGS).map((f) => [f, { type: 'string' as const }])),
        dtype: { type: 'string' },
        tied: { type: 'boolean' },
        untied: { type: 'boolean' },
        'rope-scaling': { type: 'string' },
        'chat-template': { type: 'string' },
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
  if (values.arch !== undefined) {
    if (!ARCHS.includes(values.arch as Arch)) {
      process.stderr.write(`make-model: --arch must be one of ${ARCHS.join(', ')}, got "${String(values.arch)}"\n`);
      return 2;
    }
    opts.arch = values.arch as Arch;
  }
  for (const [flag, key] of Object.entries(INT_FLAGS)) {
    const raw = values[flag];
    if (raw === undefined) continue;
    const n = Number(raw);
    if (typeof raw !== 'string' || !/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || (flag !== 'seed' && n <= 0)) {
      process.stderr.write(
        `make-model: --${flag} must be a ${flag === 'seed' ? 'non-negative' : 'positive'} integer, got "${String(raw)}"\n`,
      );
      return 2;
    }
    opts[key] = n;
  }
  if (values.tied && values.untied) {
    process.stderr.write('make-model: --tied and --untied are exclusive\n');
    return 2;
  }
  if (values.tied || values.untied) opts.tied = values.tied === true;
  if (values['rope-scaling'] !== undefined) {
    if (values['rope-scaling'] !== 'llama3') {
      process.stderr.write(`make-model: --rope-scaling must be llama3, got "${String(values['rope-scaling'])}"\n`);
      return 2;
    }
    opts.ropeScaling = 'llama3';
  }
  const chat = values['chat-template'];
  if (chat !== undefined) {
    if (chat !== 'chatml' && chat !== 'llama3') {
      process.stderr.write(`make-model: --chat-template must be chatml or llama3, got "${String(chat)}"\n`);
      return 2;
    }
    opts.chatTemplate = chat;
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
