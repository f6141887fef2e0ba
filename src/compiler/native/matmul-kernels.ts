/**
 * tfjs-wasm kernels `_FusedMatMul` and `BatchMatMul` on oneDNN and the addon's panel kernel. Tensors stay on the wasm heap: the
 * addon gets the heap's ArrayBuffer (taken again on every call, as the memory may have grown) and
 * byte offsets. One primitive per shape signature, created on first use (warm-up). Weights (tensors
 * marked constant, with no batch dimension) get, on first use, a packed copy outside the heap in
 * each candidate layout: the other layout for oneDNN, and, for few rows, the addon's own 8-column
 * panels (native/src/panels.h). The candidates are timed (caches flushed, as a step reads each
 * weight from memory) and the fastest is kept for that signature;
 * BATCHGEN_NATIVE_LAYOUT=stored|transposed|panels forces one where it is a candidate. A copy is freed
 * when tfjs frees its tensor. Anything these kernels do not cover (other dtypes, prelu, a bias that
 * is not one row, broadcasts oneDNN cannot express) runs the stock kernel.
 */
import { broadcast_util, type TensorInfo } from '@tensorflow/tfjs-core';
import type { NativeAddon } from './addon.js';
import { announceNativeCreation } from './creations.js';
import type { KernelFunc, WasmBackend } from './heap-kernel.js';

type Info = TensorInfo;

/** tfjs activation names and the addon's codes for them. */
const ACTIVATIONS: Record<string, number> = { linear: 0, relu: 1, relu6: 2, sigmoid: 3, elu: 4, leakyrelu: 5 };

const size = (s: number[]) => s.reduce((a, b) => a * b, 1);

export interface NativeStats {
  primitives: number;
  /** packed copies alive */
  packs: number;
  /** how many constant-weight matmul signatures run with each layout */
  layouts: Record<Layout, number>;
}

/**
 * Up to how many rows the panel kernel is a candidate: it is written for decode steps (weights read
 * once from memory for a few rows); above that oneDNN's blocked sgemm is faster.
 */
const PANEL_MAX_ROWS = 64;
/** Timed runs per layout when choosing a weight layout (after one untimed run each). */
const TUNE_RUNS = 3;
/**
 * How a constant weight is read: as tfjs stores it, as a transposed copy outside the heap (both by
 * oneDNN), or as 8-column panels by the addon's own kernel.
 */
type Packed = 'transposed' | 'panels';
type Layout = 'stored' | Packed;

/**
 * Times each layout (alternating runs, after one untimed run each) and returns the fastest. The
 * caches are flushed before each run: in a step each weight is read once, from memory, and which
 * layout wins differs between weights in cache and weights from memory.
 */
function chooseLayout(candidates: Layout[], runAs: (l: Layout) => void, flush: () => void): Layout {
  const ms = candidates.map(() => 0);
  for (let i = 0; i <= TUNE_RUNS; i++) {
    candidates.forEach((l, k) => {
      flush();
      const t = performance.now();
      runAs(l);
      if (i > 0) ms[k] += performance.now() - t;
    });
  }
  return candidates[ms.indexOf(Math.min(...ms))];
}

export class NativeMatmuls {
  private readonly prims = new Map<string, number>();
  /** The chosen weights layout per signature of a constant-weight matmul. */
  private readonly layouts = new Map<string, Layout>();
  /** The packed copies of each constant tensor that has some, by layout. */
  private readonly packs = new WeakMap<object, Map<Packed, number>>();
  private readonly constants = new WeakSet<object>();
  private readonly wrapped = new WeakSet<object>();
  private livePacks = 0;
  /** Implementation oneDNN chose for each primitive signature (for the benchmark's record). */
  readonly implementations = new Map<string, string>();

  /** Whether the panel kernel runs on this CPU. */
  private readonly panels: boolean;

  constructor(private readonly addon: NativeAddon) {
    this.panels = addon.ownKernels();
  }

  /** Tensors whose contents never change while they live (weights): eligible for packing. */
  markConstant(t: Info): void {
    this.constants.add(t.dataId);
  }

  /** Packed copies are freed with their tensor: wraps the backend's disposeData once. */
  private watchDisposal(backend: WasmBackend): void {
    if (this.wrapped.has(backend)) return;
    this.wrapped.add(backend);
    const original = backend.disposeData.bind(backend);
    backend.disposeData = (dataId, force) => {
      const freed = original(dataId, force);
      if (!backend.dataIdMap.has(dataId)) this.unpack(dataId);
      return freed;
    };
  }

  private unpack(dataId: object, only?: Packed): void {
    const byKind = this.packs.get(dataId);
    if (byKind === undefined) return;
    for (const [kind, id] of byKind) {
      if (only !== undefined && kind !== only) continue;
      this.addon.unpack(id);
      byKind.delete(kind);
      this.livePacks -= 1;
    }
    if (byKind.size === 0) this.packs.delete(dataId);
  }

  private primitive(sig: string, make: () => [number, string]): number {
    let id = this.prims.get(sig);
    if (id === undefined) {
      announceNativeCreation(`matmul ${sig}`);
      const [made, impl] = make();
      id = made;
      this.prims.set(sig, id);
      this.implementations.set(sig, impl);
    }
    return id;
  }

  /**
   * out = act(a @ b + bias) for a [bA, M, K] (or [bA, K, M] transposed), b [bB, K, N] (or [bB, N, K]),
   * batch dims broadcast when one side has 1. Returns null when the case is not covered.
   */
  private matmul(
    backend: WasmBackend,
    a: Info,
    b: Info,
    bias: Info | undefined,
    tA: boolean,
    tB: boolean,
    act: number,
    alpha: number,
  ): Info | null {
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || (bias && bias.dtype !== 'float32')) return null;
    const ra = a.shape.length;
    const rb = b.shape.length;
    if (ra < 2 || rb < 2) return null;
    const M = tA ? a.shape[ra - 1] : a.shape[ra - 2];
    const K = tA ? a.shape[ra - 2] : a.shape[ra - 1];
    const N = tB ? b.shape[rb - 2] : b.shape[rb - 1];
    if ((tB ? b.shape[rb - 1] : b.shape[rb - 2]) !== K) return null;
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    let bA = size(outerA);
    const bB = size(outerB);
    // Batches either match dim for dim or one side has none; anything else is left to stock.
    const same = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
    if (!same && bA !== 1 && bB !== 1) return null;
    if (bias && (bias.shape[bias.shape.length - 1] !== N || size(bias.shape) !== N)) return null;
    const outShape = [...broadcast_util.assertAndGetBroadcastShape(outerA, outerB), M, N];
    // A weight (no batch) against a batch of untransposed rows: one [bA*M, K] matmul.
    let m = M;
    if (bB === 1 && bA > 1 && !tA) {
      m = bA * M;
      bA = 1;
    }
    const sig = `${bA}x${bB}:${m}x${K}x${N}:${+tA}${+tB}:${bias ? 1 : 0}:${act}:${alpha}`;
    const prim = (packed: boolean) =>
      this.primitive(`${sig}:${+packed}`, () => this.addon.create(bA, bB, m, K, N, +tA, +tB, bias ? 1 : 0, act, alpha, +packed));
    const out = backend.makeOutput(outShape, 'float32');
    // Offsets after makeOutput: its malloc may grow the memory and replace the buffer.
    const off = (t: Info) => backend.dataIdMap.get(t.dataId)!.memoryOffset;
    const heap = backend.wasm.HEAPU8.buffer as ArrayBuffer;
    const run = (id: number, packId: number) => this.addon.run(heap, id, off(a), off(b), bias ? off(bias) : 0, off(out), packId);
    if (bB !== 1 || !this.constants.has(b.dataId)) {
      run(prim(false), -1);
      return out;
    }
    this.watchDisposal(backend);
    const ensurePack = (kind: Packed) => {
      let byKind = this.packs.get(b.dataId);
      if (!byKind) this.packs.set(b.dataId, (byKind = new Map()));
      let packId = byKind.get(kind);
      if (packId === undefined) {
        announceNativeCreation(`pack ${kind} ${K}x${N}`);
        packId = kind === 'panels' ? this.addon.packPanels(heap, off(b), K, N, +tB) : this.addon.pack(heap, off(b), prim(true));
        byKind.set(kind, packId);
        this.livePacks += 1;
      }
      return packId;
    };
    const runAs = (layout: Layout) => {
      if (layout === 'stored') run(prim(false), -1);
      else if (layout === 'transposed') run(prim(true), ensurePack('transposed'));
      else this.addon.runPanels(heap, off(a), m, ensurePack('panels'), bias ? off(bias) : -1, off(out));
    };
    const candidates: Layout[] = ['stored', 'transposed'];
    // the panel kernel: no fused activation, untransposed rows, one batch of few rows
    if (this.panels && act === 0 && !tA && bA === 1 && m <= PANEL_MAX_ROWS) candidates.push('panels');
    // BATCHGEN_NATIVE_LAYOUT forces one where it is a candidate (to measure or test each layout)
    const forced = process.env.BATCHGEN_NATIVE_LAYOUT as Layout | undefined;
    let layout = forced && candidates.includes(forced) ? forced : this.layouts.get(sig);
    if (!this.layouts.has(sig) && layout !== undefined) this.layouts.set(sig, layout);
    if (layout === undefined) {
      const had = new Set(this.packs.get(b.dataId)?.keys() ?? []);
      layout = chooseLayout(candidates, runAs, () => this.addon.flush());
      this.layouts.set(sig, layout);
      // copies made for the timing only
      for (const kind of ['transposed', 'panels'] as const) if (layout !== kind && !had.has(kind)) this.unpack(b.dataId, kind);
    }
    runAs(layout);
    return out;
  }

  fusedMatMul(stock: KernelFunc): KernelFunc {
    return (args) => {
      const { a, b, bias, preluActivationWeights } = args.inputs;
      const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as {
        transposeA: boolean;
        transposeB: boolean;
        activation: string;
        leakyreluAlpha?: number;
      };
      const act = ACTIVATIONS[activation ?? 'linear'];
      if (preluActivationWeights || act === undefined || !a || !b) return stock(args);
      const alpha = activation === 'leakyrelu' ? (leakyreluAlpha ?? 0.2) : 0;
      return this.matmul(args.backend, a, b, bias, transposeA, transposeB, act, alpha) ?? stock(args);
    };
  }

  batchMatMul(stock: KernelFunc): KernelFunc {
    return (args) => {
      const { a, b } = args.inputs;
      const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
      if (!a || !b) return stock(args);
      return this.matmul(args.backend, a, b, undefined, transposeA, transposeB, 0, 0) ?? stock(args);
    };
  }

  /** Primitives created, packed copies alive, and the layouts chosen per constant-weight signature. */
  stats(): NativeStats {
    const count = (l: Layout) => [...this.layouts.values()].filter((x) => x === l).length;
    return {
      primitives: this.prims.size,
      packs: this.livePacks,
      layouts: { stored: count('stored'), transposed: count('transposed'), panels: count('panels') },
    };
  }
}
