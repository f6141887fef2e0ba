/**
 * What the native kernels share: the parts of tfjs-wasm's backend they use, and the frame of a
 * kernel that runs the addon on tensors in the wasm heap (output made first, then byte offsets).
 */
import type { TensorInfo } from '@tensorflow/tfjs-core';

/** The parts of tfjs-wasm's backend object the native kernels use. */
export interface WasmBackend {
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined; has(id: object): boolean };
  makeOutput(shape: number[], dtype: string): TensorInfo;
  disposeData(dataId: object, force?: boolean): boolean;
  wasm: { HEAPU8: Uint8Array };
}

type KernelArgs = { inputs: Record<string, TensorInfo | undefined>; backend: WasmBackend; attrs: Record<string, unknown> };
export type KernelFunc = (args: KernelArgs) => TensorInfo;

type Inputs = Record<string, TensorInfo>;
/** Byte offset of a tensor in the wasm heap. */
export type Offset = (t: TensorInfo) => number;

/**
 * A float32 kernel of the shape `outShape(inputs, attrs)` whose work is `call` on the heap and the
 * byte offsets of its inputs and output.
 */
export function heapKernel(
  outShape: (ins: Inputs, attrs: Record<string, unknown>) => number[],
  call: (ins: Inputs, heap: ArrayBuffer, off: Offset, out: TensorInfo, attrs: Record<string, unknown>) => void,
): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const ins = inputs as Inputs;
    const out = backend.makeOutput(outShape(ins, attrs), 'float32');
    // offsets after makeOutput: its malloc may grow the memory and replace the buffer
    const off = (t: TensorInfo) => backend.dataIdMap.get(t.dataId)!.memoryOffset;
    call(ins, backend.wasm.HEAPU8.buffer as ArrayBuffer, off, out, attrs);
    return out;
  };
}
