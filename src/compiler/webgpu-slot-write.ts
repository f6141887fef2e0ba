/**
 * The KV cache's decode-step write on webgpu: one small compute shader writes a step's keys or
 * values into cache position `slot` of the existing cache buffer, R·H·D elements, instead of
 * building a new cache with `where` (a full copy of the cache per layer and step).
 *
 * tfjs-backend-webgpu's `runWebGPUProgram` takes an output tensor: given the cache tensor, the
 * program binds the cache's buffer as its output and writes only the slot. The slot, like every
 * size, is a uniform, so all steps and all variants of one cache rank share two pipelines.
 */
import * as tf from '@tensorflow/tfjs-core';

interface WebgpuBackendLike {
  runWebGPUProgram(
    program: object,
    inputs: tf.TensorInfo[],
    outputDtype: tf.DataType,
    uniforms: { type: 'int32'; data: number[] }[],
    output: tf.TensorInfo,
  ): tf.TensorInfo;
  tensorMap: { get(id: object): { values: unknown; resource: unknown } };
}

const WORKGROUP = 64;

function program(shape: number[], transposed: boolean, n: number): object {
  // Element (rh, d) of the step [R, H·D] goes to k[rh, slot, d], or to vt[rh, d, slot] (transposed).
  const dst = transposed
    ? '(rh * uniforms.depth + d) * uniforms.length + uniforms.slot'
    : '(rh * uniforms.length + uniforms.slot) * uniforms.depth + d';
  return {
    variableNames: ['x'],
    outputShape: shape,
    shaderKey: transposed ? 'batchgenCacheSlotT' : 'batchgenCacheSlot',
    dispatchLayout: { x: shape.map((_, i) => i) },
    dispatch: [Math.ceil(n / WORKGROUP), 1, 1],
    workgroupSize: [WORKGROUP, 1, 1],
    uniforms: 'slot : i32, rows : i32, depth : i32, length : i32,',
    size: false,
    getUserCode: () => `
      fn main(index : i32) {
        if (index < uniforms.rows * uniforms.depth) {
          let rh = index / uniforms.depth;
          let d = index - rh * uniforms.depth;
          result[${dst}] = x[index];
        }
      }`,
  };
}

/**
 * Writes `step` [R, H·D] into `cache` ([R, H, T, D], or [R, H, D, T] when `transposed`) at
 * position `slot`, in place. The cache tensor keeps its identity: no tensor is made or freed.
 */
export function writeSlotWebgpu(cache: tf.Tensor4D, step: tf.Tensor, slot: number, transposed: boolean): void {
  const backend = tf.backend() as unknown as WebgpuBackendLike;
  const [R, H, a, b] = cache.shape;
  const T = transposed ? b : a;
  const D = transposed ? a : b;
  const n = R * H * D;
  if (step.size !== n) throw new Error(`cache slot write: step of ${step.size} values for a cache of ${n} per position`);
  const uniforms = [slot, R * H, D, T].map((v) => ({ type: 'int32' as const, data: [v] }));
  backend.runWebGPUProgram(program(cache.shape, transposed, n), [step], 'float32', uniforms, cache);
  // A value copy read back earlier is stale now: the GPU buffer is the truth.
  backend.tensorMap.get(cache.dataId).values = null;
}
