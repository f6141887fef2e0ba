/**
 * Seeded random weights for the model maker: the same seed, name and shape give the same numbers on
 * every platform, and a tensor's values do not depend on the other tensors.
 */
/**
 * GPT-2's initialisation: normal(0, 0.02) for matrices, biases 0 and layer norms 1 and 0, except
 * that biases and layer norms get a little noise too, so that a forward pass that ignored them (or
 * mixed gain and bias up) would not go unnoticed. Each tensor has its own stream, seeded from the
 * seed and its name, so a tensor's values do not depend on the other tensors.
 * `scratch` is reused from tensor to tensor: on a fresh allocation, first-touch page faults cost
 * more than the numbers themselves.
 */
export function randomTensor(shape: number[], name: string, seed: number, scratch: Float32Array): Float32Array {
  const out = scratch.subarray(
    0,
    shape.reduce((a, b) => a * b, 1),
  );
  // GPT-2's ln_1/ln_2/ln_f and Llama's input_layernorm/post_attention_layernorm/norm gains.
  const isLnGain = /(ln_\d|ln_f|norm)\.weight$/.test(name);
  const std = shape.length === 2 ? 0.02 : isLnGain ? 0.05 : 0.01;
  fillNormal(out, hashSeed(seed, name), isLnGain ? 1 : 0, std);
  return out;
}

/**
 * Normal samples from mulberry32 (a small, well-mixed 32-bit PRNG), two per draw: each 16-bit half
 * indexes a table of the normal's 65536 quantiles. Much faster than Box-Muller (GPT-2 small has
 * 124M weights) and, with no transcendental function in the loop, the same on every platform.
 */
function fillNormal(out: Float32Array, seed: number, mean: number, std: number): void {
  const q = normalQuantiles();
  const n = out.length;
  let s = seed | 0;
  for (let i = 0; i < n; i += 2) {
    s = (s + 0x6d2b79f5) | 0;
    let x = Math.imul(s ^ (s >>> 15), s | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    x ^= x >>> 14;
    out[i] = mean + std * q[x & 0xffff];
    if (i + 1 < n) out[i + 1] = mean + std * q[(x >>> 16) & 0xffff];
  }
}

let quantiles: Float64Array | null = null;

/** Φ⁻¹((k + 0.5) / 65536) for k in [0, 65536), by Acklam's rational approximation (rel. error < 1.2e-9). */
function normalQuantiles(): Float64Array {
  if (quantiles) return quantiles;
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const tail = (p: number): number => {
    const t = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1);
  };
  const q = new Float64Array(65536);
  for (let k = 0; k < 65536; k++) {
    const p = (k + 0.5) / 65536;
    if (p < 0.02425) q[k] = tail(p);
    else if (p > 1 - 0.02425) q[k] = -tail(1 - p);
    else {
      const u = p - 0.5;
      const r = u * u;
      q[k] =
        ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * u) /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
  }
  return (quantiles = q);
}

/** FNV-1a over the name, mixed with the seed. */
function hashSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
