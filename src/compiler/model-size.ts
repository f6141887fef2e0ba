/**
 * Whether a model's weights fit the backend, checked from config.json alone, before any weight is
 * read: the wasm backend's heap is one 32-bit WebAssembly memory, 4 GiB at most, for the weights
 * (float32), every variant's KV cache and the step's workspace together. XNNPACK, which runs the
 * wasm matmuls, packs each weight matrix into a copy of its own on first use, inside the same heap:
 * a matmul weight costs twice its size there. (Measured: a Qwen2.5-0.5B shape, 2.35 GiB of weights,
 * failed in xnn_create_fully_connected with out-of-memory, then crashed the process.)
 */
import { type ModelArch, deviceWeightBytes } from '../model/arch.js';
import { ModelFormatError } from '../shared/errors.js';
import type { BackendName } from './backend.js';

const GIB = 1024 ** 3;
/** The wasm heap's maximum, and what is left of it for caches and workspace beyond the weights. */
export const WASM_HEAP_BYTES = 4 * GIB;
export const WASM_HEADROOM_BYTES = 0.25 * GIB;

/** The problem with loading these weights on this backend, or null when they fit. */
/**
 * Bytes the weights take in the wasm heap: float32 weights, and XNNPACK's packed copy of each
 * matmul weight, unless the native kernels run the matmuls (their packed copies live outside the heap).
 */
export function wasmWeightBytes(arch: ModelArch, nativeMatmuls = false): number {
  return deviceWeightBytes(arch) + (nativeMatmuls ? 0 : 4 * arch.matmulParams);
}

export function backendSizeProblem(arch: ModelArch, backend: BackendName, nativeMatmuls = false): string | null {
  if (backend !== 'wasm') return null;
  const bytes = wasmWeightBytes(arch, nativeMatmuls);
  if (bytes <= WASM_HEAP_BYTES - WASM_HEADROOM_BYTES) return null;
  const gib = (n: number) => `${(n / GIB).toFixed(2)} GiB`;
  return (
    `${(arch.params / 1e9).toFixed(2)}B parameters need ${gib(bytes)} of the wasm heap ` +
    `(${gib(deviceWeightBytes(arch))} of float32 weights${nativeMatmuls ? '' : ", and XNNPACK's packed copy of the matmul weights"}), ` +
    `more than the wasm backend can hold (its heap is ${gib(WASM_HEAP_BYTES)} for weights, KV caches and workspace together, ` +
    `${gib(WASM_HEAP_BYTES - WASM_HEADROOM_BYTES)} at most for weights). ` +
    (nativeMatmuls ? '' : 'With the native kernels (oneDNN, see the README) the packed copies leave the heap. ') +
    'Run it on a backend without that limit: tensorflow (@tensorflow/tfjs-node-gpu or tfjs-node installed) or webgpu on a GPU with the memory, ' +
    'with BATCHGEN_BACKEND; or pick a smaller model'
  );
}

export function checkFitsBackend(dir: string, arch: ModelArch, backend: BackendName, nativeMatmuls = false): void {
  const problem = backendSizeProblem(arch, backend, nativeMatmuls);
  if (problem) throw new ModelFormatError(`${dir}/config.json`, problem);
}

/**
 * The device's largest tensors, by name and shape: the embedding, the output projection (stored
 * transposed), the position table (GPT-2) and the MLP's matrices. webgpu binds each tensor as one
 * storage buffer, so the largest must fit the adapter's binding limit.
 */
export function largestTensors(a: ModelArch): [string, number[]][] {
  const list: [string, number[]][] = [
    ['embedding', [a.vocabSize, a.hidden]],
    ['lm_head (transposed)', [a.hidden, a.vocabSize]],
    ['mlp', [a.hidden, a.intermediate]],
  ];
  if (a.family === 'gpt2') list.push(['wpe', [a.contextLength, a.hidden]]);
  return list;
}
