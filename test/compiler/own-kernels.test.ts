/**
 * The addon's own kernels (native/src/panels.h, native/src/attention.h) against float64 host
 * arithmetic: the panel matmul on every row count it has a code path for, column counts that do
 * not fill the last panel, stored and transposed weights, with and without a bias; and the decode
 * attention over a cache with left padding, unwritten positions, grouped-query heads and a row
 * that sees no position, against the same attention in tfjs ops; and the row ops (layer norm, RMS
 * norm, GELU, SiLU-gated product) under both providers.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { initBackend, kernelsInfo, nativeStats, tf, useKernels } from '../../src/compiler/index.js';
import { cacheAttention } from '../../src/compiler/attention.js';
import { loadAddon } from '../../src/compiler/native/addon.js';
import { markConstants, nativeKernel } from '../../src/compiler/native/provider.js';
import { NEG } from '../../src/compiler/packing.js';
import { CACHE_ATTENTION } from '../../src/compiler/native/attention-kernel.js';
import { GELU, LAYER_NORM, RMS_NORM, ROTARY, SILU_MUL } from '../../src/compiler/native/row-kernels.js';
import { gelu, layerNorm, rmsNorm, rotate, siluMul } from '../../src/compiler/fused.js';

const backend = await initBackend();
const initial = kernelsInfo().kernels;
const { addon, reason } = loadAddon();
const skip = () =>
  backend !== 'wasm'
    ? `backend ${backend}`
    : addon === null
      ? `native kernels not available: ${reason}`
      : !addon.ownKernels()
        ? 'this CPU has no AVX2 and FMA'
        : false;

before(() => {
  if (!skip()) useKernels('native');
});
after(() => {
  if (!skip()) useKernels(initial);
});

/** Largest |a - b| / max(1, |b|) over all elements. */
function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let e = 0;
  for (let i = 0; i < a.length; i++) e = Math.max(e, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return e;
}

/** x [M, K] @ w (+ bias) in float64; w is [K, N], or [N, K] when transposed. */
function hostMatmul(x: Float32Array, w: Float32Array, bias: Float32Array | null, M: number, K: number, N: number, tB: boolean) {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = bias ? bias[j] : 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[tB ? j * K + k : k * N + j];
      out[i * N + j] = s;
    }
  return out;
}

test('the panel matmul matches float64 on 1 to 32 rows (the 8-row and the 6-row kernels), partial panels, either weight layout, with and without bias', {
  skip: skip(),
}, () => {
  process.env.BATCHGEN_NATIVE_LAYOUT = 'panels';
  try {
    let seed = 100;
    for (const [K, N] of [
      [37, 21],
      [64, 8],
      [96, 131],
    ])
      for (const tB of [false, true])
        for (const withBias of [false, true]) {
          const w = tf.randomNormal(tB ? [N, K] : [K, N], 0, 1, 'float32', seed++) as tf.Tensor2D;
          const bias = withBias ? (tf.randomNormal([N], 0, 1, 'float32', seed++) as tf.Tensor1D) : null;
          markConstants(w);
          const packs = nativeStats().packs;
          for (const M of [1, 2, 3, 4, 5, 8, 12, 13, 17, 32]) {
            const x = tf.randomNormal([M, K], 0, 1, 'float32', seed++) as tf.Tensor2D;
            const got = tf.tidy(() =>
              (bias ? tf.fused.matMul({ a: x, b: w, bias, transposeB: tB }) : tf.matMul(x, w, false, tB)).dataSync(),
            );
            const want = hostMatmul(
              x.dataSync() as Float32Array,
              w.dataSync() as Float32Array,
              bias?.dataSync() as Float32Array,
              M,
              K,
              N,
              tB,
            );
            const e = maxError(got, want);
            assert.ok(e < 1e-5, `M=${M} K=${K} N=${N} transposeB=${tB} bias=${withBias}: error ${e.toExponential(2)}`);
            x.dispose();
          }
          assert.equal(nativeStats().packs, packs + 1, 'one panel copy of the weight served every row count');
          tf.dispose([w, ...(bias ? [bias] : [])]);
        }
  } finally {
    delete process.env.BATCHGEN_NATIVE_LAYOUT;
  }
});

/**
 * A cache of R rows, KV heads, T positions: row r's prompt occupies [pads[r], P) and decode slots
 * [P, P + written) are open; the rest is hidden by NEG, as packing.ts builds the decode bias.
 */
function cacheCase(R: number, H: number, KV: number, T: number, D: number, P: number, written: number, pads: number[], seed: number) {
  const q = tf.randomNormal([R, H * D], 0, 1, 'float32', seed);
  const k = tf.randomNormal([R, KV, T, D], 0, 1, 'float32', seed + 1) as tf.Tensor4D;
  const vt = tf.randomNormal([R, KV, D, T], 0, 1, 'float32', seed + 2) as tf.Tensor4D;
  const bias = new Float32Array(R * T).fill(NEG);
  pads.forEach((pad, r) => {
    for (let t = pad; t < P + written; t++) bias[r * T + t] = 0;
  });
  return { q, k, vt, keyBias: tf.tensor3d(bias, [R, 1, T]), bias };
}

/** The same attention in float64 on the host, with float32's rounding of a hidden score (below). */
function hostAttention(
  q: Float32Array,
  k: Float32Array,
  vt: Float32Array,
  bias: Float32Array,
  R: number,
  H: number,
  KV: number,
  T: number,
  D: number,
) {
  const out = new Float64Array(R * H * D);
  const G = H / KV;
  for (let r = 0; r < R; r++)
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / G);
      const s = new Float64Array(T);
      const hidden = (t: number) => bias[r * T + t] <= NEG / 2;
      const none = Array.from({ length: T }, (_, t) => t).every(hidden);
      for (let t = 0; t < T; t++) {
        let d = 0;
        for (let i = 0; i < D; i++) d += q[(r * H + h) * D + i] * k[((r * KV + g) * T + t) * D + i];
        // in float32, a score plus NEG rounds to NEG (its spacing there is 64): hidden keys get
        // exactly 0 weight, and a row that sees none gets equal scores
        s[t] = none ? 0 : hidden(t) ? Number.NEGATIVE_INFINITY : d / Math.sqrt(D) + bias[r * T + t];
      }
      const max = Math.max(...s);
      const e = s.map((x) => Math.exp(x - max));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < D; i++) {
        let acc = 0;
        for (let t = 0; t < T; t++) acc += (e[t] / sum) * vt[((r * KV + g) * D + i) * T + t];
        out[(r * H + h) * D + i] = acc;
      }
    }
  return out;
}

test('decode attention over the cache: native kernel and tfjs ops both match float64 (padding, unwritten slots, grouped-query heads)', {
  skip: skip(),
}, () => {
  const cases = [
    { R: 3, H: 4, KV: 4, T: 29, D: 16, P: 20, written: 3, pads: [0, 7, 19] },
    { R: 2, H: 6, KV: 2, T: 41, D: 24, P: 32, written: 9, pads: [5, 30] },
    { R: 4, H: 2, KV: 1, T: 13, D: 64, P: 8, written: 5, pads: [0, 1, 2, 7] },
  ];
  cases.forEach((c, i) => {
    const { q, k, vt, keyBias, bias } = cacheCase(c.R, c.H, c.KV, c.T, c.D, c.P, c.written, c.pads, 10 * i + 1);
    const want = hostAttention(
      q.dataSync() as Float32Array,
      k.dataSync() as Float32Array,
      vt.dataSync() as Float32Array,
      bias,
      c.R,
      c.H,
      c.KV,
      c.T,
      c.D,
    );
    useKernels('native');
    assert.ok(nativeKernel(CACHE_ATTENTION), 'the native attention kernel is registered');
    const native = tf.tidy(() => cacheAttention(q, k, vt, keyBias, c.H).dataSync());
    useKernels('stock');
    assert.ok(!nativeKernel(CACHE_ATTENTION));
    const ops = tf.tidy(() => cacheAttention(q, k, vt, keyBias, c.H).dataSync());
    useKernels('native');
    for (const [name, got] of [
      ['native', native],
      ['tfjs ops', ops],
    ] as const) {
      const e = maxError(got, want);
      assert.ok(e < 1e-5, `case ${i} ${name}: error ${e.toExponential(2)}`);
    }
    tf.dispose([q, k, vt, keyBias]);
  });
});

test('decode attention: a row that sees no position attends uniformly under both, as softmax of equal scores does', {
  skip: skip(),
}, () => {
  const { q, k, vt, keyBias, bias } = cacheCase(2, 2, 2, 10, 8, 6, 0, [0, 6], 5);
  // row 1: padding [0, 6) and no decode slot open: every position hidden
  const want = hostAttention(
    q.dataSync() as Float32Array,
    k.dataSync() as Float32Array,
    vt.dataSync() as Float32Array,
    bias,
    2,
    2,
    2,
    10,
    8,
  );
  useKernels('native');
  const native = tf.tidy(() => cacheAttention(q, k, vt, keyBias, 2).dataSync());
  useKernels('stock');
  const ops = tf.tidy(() => cacheAttention(q, k, vt, keyBias, 2).dataSync());
  useKernels('native');
  assert.ok(maxError(native, want) < 1e-5, `native: ${maxError(native, want)}`);
  assert.ok(maxError(ops, want) < 1e-5, `ops: ${maxError(ops, want)}`);
  tf.dispose([q, k, vt, keyBias]);
});

test('row ops (layer norm, RMS norm, GELU, SiLU-gated product, rotary embedding): native kernels and tfjs ops both match float64', {
  skip: skip(),
}, () => {
  const rows = 5;
  const n = 154; // 7 heads of 22 for the rotary embedding
  const x = tf.randomNormal([rows, n], 0.3, 2, 'float32', 61);
  const u = tf.randomNormal([rows, n], 0, 1, 'float32', 62);
  const g = tf.randomNormal([n], 1, 0.2, 'float32', 63) as tf.Tensor1D;
  const b = tf.randomNormal([n], 0, 0.2, 'float32', 64) as tf.Tensor1D;
  const [xv, uv, gv, bv] = [x, u, g, b].map((t) => Array.from(t.dataSync()));
  const eps = 1e-5;
  const angles = Array.from({ length: rows * 11 }, (_, i) => 0.37 * i - 2);
  const cos = tf.tensor3d(angles.map(Math.cos), [rows, 1, 11]);
  const sin = tf.tensor3d(angles.map(Math.sin), [rows, 1, 11]);
  const perRow = (f: (row: number[]) => number[]) => Array.from({ length: rows }, (_, r) => f(xv.slice(r * n, (r + 1) * n))).flat();
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));
  const want: Record<string, number[]> = {
    layerNorm: perRow((row) => {
      const m = mean(row);
      const inv = 1 / Math.sqrt(mean(row.map((v) => (v - m) ** 2)) + eps);
      return row.map((v, i) => (v - m) * inv * gv[i] + bv[i]);
    }),
    rmsNorm: perRow((row) => {
      const inv = 1 / Math.sqrt(mean(row.map((v) => v * v)) + eps);
      return row.map((v, i) => v * inv * gv[i]);
    }),
    gelu: xv.map((v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))),
    siluMul: xv.map((v, i) => v * sigmoid(v) * uv[i]),
    // x as [rows, 7 heads, 11·2]: each head's halves rotated by its row's 11 angles
    rotary: xv.map((v, i) => {
      const [r, j] = [Math.floor(i / n), (i % n) % 22];
      const [half, k] = [j < 11 ? 0 : 1, j % 11];
      const other = xv[i + (half === 0 ? 11 : -11)];
      const [c, sn] = [Math.cos(angles[r * 11 + k]), Math.sin(angles[r * 11 + k])];
      return half === 0 ? v * c - other * sn : v * c + other * sn;
    }),
  };
  const compute = () => ({
    layerNorm: tf.tidy(() => layerNorm(x, g, b, eps).dataSync()),
    rmsNorm: tf.tidy(() => rmsNorm(x, g, eps).dataSync()),
    gelu: tf.tidy(() => gelu(x).dataSync()),
    siluMul: tf.tidy(() => siluMul(x, u).dataSync()),
    rotary: tf.tidy(() => rotate(tf.reshape(x, [rows, 7, 22]), cos, sin).dataSync()),
  });
  useKernels('native');
  assert.ok([LAYER_NORM, RMS_NORM, GELU, SILU_MUL, ROTARY].every(nativeKernel), 'the native row kernels are registered');
  const native = compute();
  useKernels('stock');
  assert.ok(![LAYER_NORM, RMS_NORM, GELU, SILU_MUL, ROTARY].some(nativeKernel));
  const ops = compute();
  useKernels('native');
  for (const name of Object.keys(want) as (keyof typeof native)[])
    for (const [by, got] of [
      ['native', native[name]],
      ['tfjs ops', ops[name]],
    ] as const) {
      const e = maxError(got, want[name]);
      assert.ok(e < 1e-5, `${name}, ${by}: error ${e.toExponential(2)}`);
    }
  tf.dispose([x, u, g, b, cos, sin]);
});
