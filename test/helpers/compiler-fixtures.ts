/**
 * Shared set-up for the compiler tests: small random model folders written to a temporary folder
 * (removed at exit), parameters resolved as a request would be, and a direct driver of the GPT-2
 * forward (prefill + decode steps over a KV cache) that returns raw logits.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, makeModel, tf, type LoadedModel } from '../../src/compiler/index.js';
import type { MakeModelOptions } from '../../src/compiler/make-model.js';
import { KvCache } from '../../src/compiler/kv-cache.js';
import { NEG, openDecodeSlot, packBatch } from '../../src/compiler/packing.js';
import { readSafetensors, writeSafetensors } from '../../src/compiler/safetensors.js';
import { readModelFolder } from '../../src/compiler/model-folder.js';
import type { Gpt2Folder } from '../../src/compiler/types.js';
import { parseBucketPolicy, type BucketPolicy } from '../../src/shared/buckets.js';
import { resolveParams, type GenerationParams, type ResolvedParams } from '../../src/shared/params.js';
import assert from 'node:assert/strict';
import { argmax, relativeError, type RefModel } from './reference-gpt2.js';

const roots: string[] = [];
process.on('exit', () => {
  for (const r of roots) fs.rmSync(r, { recursive: true, force: true });
});

/** A fresh temporary folder, removed when the process exits. */
export function tempDir(prefix = 'batchgen-compiler-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  roots.push(dir);
  return dir;
}

export const SMALL: Omit<MakeModelOptions, 'out'> = { layers: 2, heads: 2, embd: 64, positions: 128 };

export type Gpt2Model = LoadedModel<Gpt2Folder>;

/** Writes a small random GPT-2 folder and loads it. */
export async function smallModel(name: string, opts: Omit<MakeModelOptions, 'out'> = {}): Promise<Gpt2Model> {
  const dir = path.join(tempDir(), name);
  await makeModel({ ...SMALL, ...opts, out: dir });
  return loadGpt2(dir, name);
}

/** loadModel for a folder known to be GPT-2 (its family checked). */
export async function loadGpt2(dir: string, name?: string): Promise<Gpt2Model> {
  return (await loadModel(dir, name)).as('gpt2');
}

/** readModelFolder for a folder known to be GPT-2 (its family checked). */
export async function readGpt2Folder(dir: string): Promise<Gpt2Folder> {
  const f = await readModelFolder(dir);
  if (f.family !== 'gpt2') throw new Error(`${dir} is ${f.family}, not gpt2`);
  return f;
}

/** Seeded normal samples (mulberry32 + Box-Muller), independent of the model maker's generator. */
export function normals(n: number, seed: number, std: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = std * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

/**
 * A model folder with an explicit (untied) `lm_head.weight` of the given std. A large std gives
 * peaked next-token distributions (clear argmax, sampling that matters, beams that differ).
 */
export async function untiedModel(
  name: string,
  lmHeadStd: number,
  opts: Omit<MakeModelOptions, 'out'> = {},
  headSeed = 77,
): Promise<Gpt2Model> {
  const dir = path.join(tempDir(), name);
  await makeModel({ ...SMALL, ...opts, out: dir });
  const file = path.join(dir, 'model.safetensors');
  const tensors = Object.fromEntries(readSafetensors(file));
  const wte = tensors['wte.weight'];
  tensors['lm_head.weight'] = { dtype: wte.dtype, shape: [...wte.shape], data: normals(wte.data.length, headSeed, lmHeadStd) };
  writeSafetensors(file, tensors);
  return loadGpt2(dir, name);
}

export function refOf(m: LoadedModel): RefModel {
  const g = m.as('gpt2');
  return { config: g.folder.config, weights: g.folder.weights };
}

/** Parameters as a request with these fields would get them. */
export function params(m: LoadedModel, req: GenerationParams): ResolvedParams {
  return resolveParams(req, m.defaults, () => 12345);
}

export function policy(text: string): BucketPolicy {
  return parseBucketPolicy(text);
}

/** Deterministic pseudo-random token ids in [lo, hi). */
export function randomIds(n: number, seed: number, lo = 0, hi = 50000): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + (s % (hi - lo));
  });
}

/**
 * Runs the forward pass directly: rows left padded into a prompt bucket P (packBatch), prefill, then
 * one decode step per entry of `feed[r]` (all rows the same number of steps) over a KV cache of P + steps
 * positions. Returns the logits after the prompt and after each fed token: out[step][row] (length V).
 * `inspect` sees the cache after the prefill (step 0) and after each decode step.
 */
export async function forwardSteps(
  m: LoadedModel,
  prompts: number[][],
  P: number,
  feed: number[][],
  inspect?: (cache: KvCache, step: number) => void,
): Promise<Float32Array[][]> {
  const a = m.folder.arch;
  const R = prompts.length;
  const steps = feed[0]?.length ?? 0;
  const T = P + Math.max(1, steps);
  const V = a.vocabSize;
  const cache = new KvCache(a.layers, R, a.kvHeads, T, a.headDim);
  const out: Float32Array[][] = [];
  const split = (flat: Float32Array) => Array.from({ length: R }, (_, r) => flat.slice(r * V, (r + 1) * V));
  try {
    // Left padding, positions and masks as the compiled variants pack them (pad id 0).
    const packed = packBatch(prompts, P, T - P, 1, 0);
    const { ids, pos, keyMask: mask } = packed;
    // bias[r, 0, q, k] = 0 where k ≤ q and k is a real token, else NEG
    const bias = new Float32Array(R * P * P).fill(NEG);
    for (let r = 0; r < R; r++)
      for (let q = 0; q < P; q++) for (let k = 0; k <= q; k++) if (mask[r * P + k] === 1) bias[(r * P + q) * P + k] = 0;
    const first = tf.tidy(() =>
      m.weights.prefill(cache, tf.tensor2d(ids, [R, P], 'int32'), tf.tensor2d(pos, [R, P], 'int32'), tf.tensor4d(bias, [R, 1, P, P])),
    );
    out.push(split((await first.data()) as Float32Array));
    first.dispose();
    inspect?.(cache, 0);
    for (let t = 0; t < steps; t++) {
      const positions = openDecodeSlot(packed, P, t);
      const logits = tf.tidy(() =>
        m.weights.decodeStep(
          cache,
          tf.tensor1d(
            feed.map((f) => f[t]),
            'int32',
          ),
          tf.tensor1d(positions, 'int32'),
          P + t,
          tf.tensor3d(packed.decodeBias, [R, 1, T]),
        ),
      );
      out.push(split((await logits.data()) as Float32Array));
      logits.dispose();
      inspect?.(cache, t + 1);
    }
  } finally {
    cache.dispose();
  }
  return out;
}

/**
 * The prefill logits of every prompt, all in one left-padded batch (bucket 16) and each alone at its
 * exact length, equal `reference` (an independent forward of the unpadded ids) within 1e-4
 * relative, with the same argmax.
 */
export async function assertPrefillMatches(
  m: LoadedModel,
  prompts: number[][],
  reference: (ids: number[]) => ArrayLike<number>,
  label: string,
): Promise<void> {
  const TOL = 1e-4;
  const batched = (await forwardSteps(m, prompts, 16, []))[0];
  for (const [r, p] of prompts.entries()) {
    const want = reference(p);
    const alone = (await forwardSteps(m, [p], p.length, []))[0][0];
    for (const [how, got] of [
      ['batched', batched[r]],
      ['alone', alone],
    ] as const) {
      const rel = relativeError(got, want);
      assert.ok(rel < TOL, `${label}, prompt ${r} (${how}): relative error ${rel.toExponential(2)} ≥ ${TOL}`);
      assert.equal(argmax(got), argmax(want), `${label}, prompt ${r} (${how}): argmax`);
    }
  }
}
