/**
 * The static KV cache of one variant: per layer, keys [R, H, T, D] and values stored transposed
 * [R, H, D, T], with T = P + N and H the model's key/value heads (fewer than its query heads under
 * grouped-query attention). Allocated once when the variant is compiled; every write has a
 * fixed shape. On wasm and cpu the writes go straight into the tensors' memory (in place, no copy of
 * the cache); on webgpu a small shader writes the step's slot into the cache buffer
 * (webgpu-slot-write.ts); on tensorflow a write builds the next cache tensor with `where`, which
 * keeps shapes fixed but copies the cache.
 */
import { hostMemoryBackend, hostView, tf } from './backend.js';
import { checkBindingLimit } from './webgpu.js';
import { writeSlotWebgpu } from './webgpu-slot-write.js';

/** How decode steps write the cache: into host memory, by a slot shader, or by a `where` copy. */
export type CacheWrites = 'host' | 'slot' | 'functional';

/** The write path of the current backend; BATCHGEN_CACHE_WRITES=functional forces `where` (tests compare). */
export function cacheWritesFor(backend = tf.getBackend()): CacheWrites {
  if (process.env.BATCHGEN_CACHE_WRITES === 'functional') return 'functional';
  if (backend === 'webgpu') return 'slot';
  return hostMemoryBackend() ? 'host' : 'functional';
}

interface LayerCache {
  k: tf.Tensor4D;
  vt: tf.Tensor4D;
}

export class KvCache {
  private readonly layers: LayerCache[];
  private readonly inPlace: boolean;
  readonly writes: CacheWrites;
  private scratch: Float32Array | null = null;

  constructor(
    readonly nLayer: number,
    readonly rows: number,
    readonly heads: number,
    readonly length: number,
    readonly headDim: number,
  ) {
    this.writes = cacheWritesFor();
    this.inPlace = this.writes === 'host';
    checkBindingLimit(rows * heads * length * headDim * 4, `one layer's KV cache [${rows}, ${heads}, ${length}, ${headDim}]`, 'variant');
    this.layers = Array.from({ length: nLayer }, () => ({
      k: tf.zeros([rows, heads, length, headDim]) as tf.Tensor4D,
      vt: tf.zeros([rows, heads, headDim, length]) as tf.Tensor4D,
    }));
  }

  get bytes(): number {
    return 2 * this.nLayer * this.rows * this.heads * this.length * this.headDim * 4;
  }

  layer(i: number): LayerCache {
    return this.layers[i];
  }

  /** Writes a prompt's keys and values, k and v [R, H, P, D], at positions [0, P). */
  writePrefill(i: number, k: tf.Tensor4D, v: tf.Tensor4D): void {
    const { rows: R, heads: H, length: T, headDim: D } = this;
    const P = k.shape[2];
    const L = this.layers[i];
    if (this.inPlace) {
      const ks = hostView(k)!;
      const vs = hostView(v)!;
      const kd = hostView(L.k)!;
      const vd = hostView(L.vt)!;
      for (let rh = 0; rh < R * H; rh++) {
        kd.set(ks.subarray(rh * P * D, (rh + 1) * P * D), rh * T * D);
        const vBase = rh * P * D;
        const dBase = rh * D * T;
        for (let p = 0; p < P; p++) for (let d = 0; d < D; d++) vd[dBase + d * T + p] = vs[vBase + p * D + d];
      }
      return;
    }
    const pad = (t: tf.Tensor4D, axis: number) => {
      const shape = [...t.shape] as [number, number, number, number];
      shape[axis] = T - P;
      return tf.concat([t, tf.zeros(shape)], axis) as tf.Tensor4D;
    };
    this.replace(i, tf.keep(pad(k, 2)), tf.keep(pad(tf.transpose(v, [0, 1, 3, 2]) as tf.Tensor4D, 3)));
  }

  /** Writes one position: k and v [R, E] (heads side by side) at cache position `slot`. */
  writeStep(i: number, slot: number, k: tf.Tensor, v: tf.Tensor): void {
    const { rows: R, heads: H, length: T, headDim: D } = this;
    const L = this.layers[i];
    if (this.inPlace) {
      const ks = hostView(k)!;
      const vs = hostView(v)!;
      const kd = hostView(L.k)!;
      const vd = hostView(L.vt)!;
      for (let rh = 0; rh < R * H; rh++) {
        const src = rh * D; // [R, H*D] row-major is [R, H, D]
        kd.set(ks.subarray(src, src + D), (rh * T + slot) * D);
        const dBase = rh * D * T + slot;
        for (let d = 0; d < D; d++) vd[dBase + d * T] = vs[src + d];
      }
      return;
    }
    if (this.writes === 'slot') {
      writeSlotWebgpu(L.k, k, slot, false);
      writeSlotWebgpu(L.vt, v, slot, true);
      return;
    }
    const at = tf.cast(tf.reshape(tf.oneHot(tf.tensor1d([slot], 'int32'), T), [T]), 'bool');
    const k4 = tf.reshape(k, [R, H, 1, D]);
    const v4 = tf.reshape(v, [R, H, D, 1]);
    const nk = tf.where(tf.reshape(at, [1, 1, T, 1]), tf.broadcastTo(k4, L.k.shape), L.k) as tf.Tensor4D;
    const nv = tf.where(tf.reshape(at, [1, 1, 1, T]), tf.broadcastTo(v4, L.vt.shape), L.vt) as tf.Tensor4D;
    this.replace(i, tf.keep(nk), tf.keep(nv));
  }

  /** Beam search: row r takes the cache of row from[r] (every layer). */
  reorder(from: number[]): void {
    if (from.every((f, r) => f === r)) return;
    if (this.inPlace) {
      const rowSize = this.heads * this.length * this.headDim;
      if (this.scratch === null) this.scratch = new Float32Array(this.rows * rowSize);
      const scratch = this.scratch;
      for (const L of this.layers) {
        for (const t of [L.k, L.vt]) {
          const view = hostView(t)!;
          scratch.set(view);
          from.forEach((f, r) => {
            if (f !== r) view.set(scratch.subarray(f * rowSize, (f + 1) * rowSize), r * rowSize);
          });
        }
      }
      return;
    }
    const idx = tf.tensor1d(from, 'int32');
    this.layers.forEach((L, i) => this.replace(i, tf.gather(L.k, idx) as tf.Tensor4D, tf.gather(L.vt, idx) as tf.Tensor4D));
    idx.dispose();
  }

  private replace(i: number, k: tf.Tensor4D, vt: tf.Tensor4D): void {
    const L = this.layers[i];
    if (L.k !== k) L.k.dispose();
    if (L.vt !== vt) L.vt.dispose();
    this.layers[i] = { k, vt };
  }

  dispose(): void {
    for (const L of this.layers) tf.dispose([L.k, L.vt]);
    this.scratch = null;
  }
}
