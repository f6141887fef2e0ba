/**
 * A folder's weights as people have them: one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` (its `weight_map` names the shard of every tensor). Weights are only
 * ever read from safetensors: pickles (pytorch_model.bin, *.pt, ...) can run code when loaded, so they
 * are refused, never opened. Every tensor comes back as float32 (F32, F16 and BF16 are read).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ModelFormatError } from '../shared/errors.js';
import { type FloatTensor, readSafetensors } from './safetensors.js';

export interface Checkpoint {
  tensors: Map<string, FloatTensor>;
  /** The file a tensor came from (errors name it). */
  fileOf(name: string): string;
  /** What to name in an error about the checkpoint as a whole. */
  file: string;
}

const PICKLE_EXT = ['.bin', '.pt', '.pth', '.ckpt', '.pkl', '.pickle'];
export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

export function readCheckpoint(dir: string, include: (name: string) => boolean): Checkpoint {
  const single = path.join(dir, SINGLE_FILE);
  if (fs.existsSync(single)) {
    const tensors = readSafetensors(single, { include });
    return { tensors, fileOf: () => single, file: single };
  }
  const index = path.join(dir, INDEX_FILE);
  if (fs.existsSync(index)) return readSharded(dir, index, include);
  const pickles = fs.readdirSync(dir).filter((n) => PICKLE_EXT.includes(path.extname(n).toLowerCase()));
  if (pickles.length > 0) {
    throw new ModelFormatError(
      single,
      `not found; the folder has ${pickles.join(', ')}, a pickle file, which is never loaded (unpickling can run arbitrary code). ` +
        'Convert it once, where you trust the file, to model.safetensors: in Python, ' +
        '`AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)` with transformers, ' +
        'or use the safetensors "convert" tool on the Hugging Face Hub',
    );
  }
  throw new ModelFormatError(single, `file not found (nor ${INDEX_FILE} for a sharded checkpoint)`);
}

function readSharded(dir: string, index: string, include: (name: string) => boolean): Checkpoint {
  const fail = (problem: string): never => {
    throw new ModelFormatError(index, problem);
  };
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(index, 'utf-8'));
  } catch (e) {
    return fail(`not valid JSON (${(e as Error).message})`);
  }
  const map = (doc as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) return fail('missing the "weight_map" object');
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.includes('/') || shard.includes('\\') || !shard.endsWith('.safetensors'))
      fail(`"weight_map.${name}" must be a .safetensors file name in the folder, got ${JSON.stringify(shard)}`);
    if (!byShard.has(shard as string)) byShard.set(shard as string, []);
    byShard.get(shard as string)!.push(name);
  }
  if (byShard.size === 0) fail('"weight_map" lists no tensor');
  const tensors = new Map<string, FloatTensor>();
  const origin = new Map<string, string>();
  for (const [shard, names] of byShard) {
    const file = path.join(dir, shard);
    if (!fs.existsSync(file)) throw new ModelFormatError(file, `file not found: ${INDEX_FILE} lists it as the shard of ${names[0]}`);
    const listed = new Set(names);
    const got = readSafetensors(file, { include: (n) => listed.has(n) && include(n) });
    for (const n of names) {
      if (!include(n)) continue;
      const t = got.get(n);
      if (!t) throw new ModelFormatError(file, `has no tensor ${n}, which ${INDEX_FILE} says is in it`);
      tensors.set(n, t);
      origin.set(n, file);
    }
  }
  return { tensors, fileOf: (n) => origin.get(n) ?? index, file: index };
}
