/**
 * The only place that chooses a tfjs backend. `BATCHGEN_BACKEND` (tensorflow | webgpu | wasm | cpu)
 * forces one; otherwise the TensorFlow C library (tfjs-node-gpu, then tfjs-node) when installed,
 * then webgpu when Dawn finds a real GPU (a software adapter would lose to wasm), else wasm.
 * The tensorflow and webgpu packages are optional dependencies, loaded only if present.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';
import { gpuDevicePresent, installPipelineCounter, loadWebgpu, webgpuAdapter } from './webgpu.js';
import { installKernels, kernelsInfo } from './native/provider.js';

export { tf };
export type BackendName = 'tensorflow' | 'webgpu' | 'wasm' | 'cpu';
const NAMES: BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu'];

let chosen: Promise<BackendName> | null = null;

/** Loads @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node if installed; returns its name or null. */
function loadTensorflowBinding(): string | null {
  const require = createRequire(import.meta.url);
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      require(pkg);
      return pkg;
    } catch {
      // not installed, or libtensorflow missing: try the next one
    }
  }
  return null;
}

async function choose(requested: BackendName | undefined): Promise<BackendName> {
  const forced = requested ?? (process.env.BATCHGEN_BACKEND as BackendName | undefined);
  if (forced !== undefined && !NAMES.includes(forced)) {
    throw new Error(`BATCHGEN_BACKEND="${forced}": expected one of ${NAMES.join(', ')}`);
  }
  const order: BackendName[] = forced ? [forced] : NAMES;
  for (const name of order) {
    if (name === 'tensorflow' && loadTensorflowBinding() === null) {
      if (forced)
        throw new Error(
          'BATCHGEN_BACKEND=tensorflow: neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node is installed (see the README)',
        );
      continue;
    }
    if (name === 'webgpu' && !(await webgpuUsable(forced === 'webgpu'))) continue;
    if (await tf.setBackend(name)) {
      await tf.ready();
      if (name === 'webgpu') installPipelineCounter();
      installKernels(name); // native (oneDNN) or stock matmul kernels on wasm
      return name;
    }
    if (forced) throw new Error(`backend ${name} failed to initialise`);
  }
  throw new Error('no tfjs backend could be initialised');
}

/** Forced: loads webgpu or throws why not. Automatic: only a real GPU adapter, and never throws. */
async function webgpuUsable(forced: boolean): Promise<boolean> {
  if (forced) {
    await loadWebgpu();
    return true;
  }
  // No GPU device node: nothing to probe (and Dawn's start-up and warnings are spared).
  if (!gpuDevicePresent()) return false;
  try {
    return !(await loadWebgpu()).software;
  } catch {
    return false; // packages, Vulkan loader or adapter missing: the next backend
  }
}

/** Picks and initialises the backend once per process; later calls return the same choice. */
export function initBackend(requested?: BackendName): Promise<BackendName> {
  if (chosen === null) chosen = choose(requested);
  return chosen;
}

/**
 * What runs the kernels of the chosen backend, for the worker's info metric: XNNPACK on wasm, Dawn
 * and its adapter on webgpu, libtensorflow, or plain JavaScript.
 */
export function kernelProvider(): string {
  switch (tf.getBackend()) {
    case 'wasm':
      // matmuls on oneDNN when the native kernels run, every other op on XNNPACK / wasm
      return kernelsInfo().kernels === 'native' ? 'onednn + xnnpack' : 'xnnpack';
    case 'webgpu': {
      const a = webgpuAdapter();
      return `dawn${a ? ` (${a.description || a.vendor})` : ''}`;
    }
    case 'tensorflow':
      return 'libtensorflow';
    default:
      return 'javascript';
  }
}

/** Whether tensors of this backend live in memory that JS can write in place (wasm heap, cpu arrays). */
export function hostMemoryBackend(): boolean {
  const name = tf.getBackend();
  return name === 'wasm' || name === 'cpu';
}

/**
 * The Float32Array that holds a tensor's data on the wasm or cpu backend, without copying: the
 * KV cache writes into it in place. Returns null on other backends.
 */
export function hostView(t: tf.Tensor): Float32Array | null {
  const backend = tf.engine().backend as unknown as {
    dataIdMap?: { get(id: object): { memoryOffset: number } | undefined };
    data?: { get(id: object): { values?: Float32Array } | undefined };
    wasm?: { HEAPU8: Uint8Array };
  };
  const name = tf.getBackend();
  if (name === 'wasm' && backend.wasm && backend.dataIdMap) {
    const info = backend.dataIdMap.get(t.dataId);
    if (!info) return null;
    // The heap is re-read on every call: the wasm memory may have grown and replaced the buffer.
    // HEAPU8 is the view the backend itself keeps current (HEAPF32 may go stale after a growth).
    return new Float32Array(backend.wasm.HEAPU8.buffer, info.memoryOffset, t.size);
  }
  if (name === 'cpu' && backend.data) {
    const values = backend.data.get(t.dataId)?.values;
    return values instanceof Float32Array ? values : null;
  }
  return null;
}
