/**
 * The webgpu backend: tfjs-backend-webgpu on Dawn (the `webgpu` package, Dawn's Node bindings, over
 * Vulkan). Both packages are optional dependencies, imported only when this backend is asked for or
 * probed, so nothing here runs on wasm.
 *
 * On this backend "compile" is real: every kernel call builds a shader key (op, ranks, dtypes, a few
 * size-derived choices; sizes go in uniforms) and on a miss generates WGSL and creates a compute
 * pipeline, cached for the life of the process. The pipeline counter below wraps the device's
 * pipeline creation, so a pipeline created after a variant's warm-up is a true recompilation.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';

/** What the adapter is, and the limits that decide which models fit. */
export interface AdapterSummary {
  vendor: string;
  architecture: string;
  description: string;
  /** a CPU or software adapter (lavapipe, SwiftShader): correct, but slower than wasm */
  software: boolean;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
}

interface DawnModule {
  create(flags: string[]): GpuLike;
  globals: Record<string, unknown>;
}
interface GpuLike {
  requestAdapter(o?: { powerPreference?: string }): Promise<AdapterLike | null>;
}
interface AdapterLike {
  info?: { vendor?: string; architecture?: string; device?: string; description?: string; isFallbackAdapter?: boolean };
  isFallbackAdapter?: boolean;
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number };
}
type DeviceFn = (...args: unknown[]) => unknown;

let loading: Promise<AdapterSummary> | null = null;
let adapter: AdapterSummary | null = null;

/** The Vulkan loader Dawn opens at run time; where Debian, Ubuntu and NVIDIA images put it. */
function vulkanLoaderPresent(): boolean {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu',
    '/lib/x86_64-linux-gnu',
    '/usr/lib64',
    '/usr/lib',
    '/usr/local/lib',
  ];
  return dirs.some((d) => fs.existsSync(path.join(d, 'libvulkan.so.1')));
}

/** Whether the machine shows a GPU device node (NVIDIA's, or a DRM render node): worth probing. */
export function gpuDevicePresent(): boolean {
  const list = (dir: string) => {
    try {
      return fs.readdirSync(dir);
    } catch {
      return [];
    }
  };
  return list('/dev').some((f) => /^nvidia\d+$/.test(f)) || list('/dev/dri').some((f) => f.startsWith('renderD'));
}

function isSoftware(a: AdapterLike): boolean {
  const i = a.info ?? {};
  if (a.isFallbackAdapter || i.isFallbackAdapter) return true;
  const text = `${i.architecture ?? ''} ${i.device ?? ''} ${i.description ?? ''}`.toLowerCase();
  return /software|llvmpipe|lavapipe|swiftshader|\bcpu\b/.test(text);
}

async function load(): Promise<AdapterSummary> {
  const dawnPkg = 'webgpu'; // a variable: the package is optional, so the compiler must not require it
  let dawn: DawnModule;
  try {
    dawn = (await import(dawnPkg)) as DawnModule;
  } catch (e) {
    throw new Error(
      `webgpu backend: the optional package "webgpu" (Dawn's Node bindings) could not be loaded (${(e as Error).message}); ` +
        'install it with `npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0`',
    );
  }
  Object.assign(globalThis, dawn.globals);
  // BATCHGEN_DAWN_FLAGS: Dawn's own switches, comma separated (e.g. enable-dawn-features=...).
  const flags = (process.env.BATCHGEN_DAWN_FLAGS ?? '').split(/\s+/).filter(Boolean);
  const gpu = dawn.create(flags);
  const nav = (globalThis as unknown as { navigator?: object }).navigator;
  // tfjs-backend-webgpu registers itself at import only when navigator.gpu exists.
  if (nav) Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true });
  else Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  const a = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!a) {
    throw new Error(
      vulkanLoaderPresent()
        ? 'webgpu backend: Dawn found no adapter: no Vulkan driver answered (on a GPU host, the vendor driver and its ICD; ' +
            "on a CPU, Mesa's lavapipe from bookworm-backports: apt-get install -t bookworm-backports mesa-vulkan-drivers)"
        : 'webgpu backend: the Vulkan loader libvulkan.so.1 is missing (apt-get install libvulkan1), so Dawn found no adapter',
    );
  }
  const tfWebgpu = '@tensorflow/tfjs-backend-webgpu';
  try {
    await import(tfWebgpu);
  } catch (e) {
    throw new Error(
      `webgpu backend: the optional package "${tfWebgpu}" could not be loaded (${(e as Error).message}); install it with \`npm install ${tfWebgpu}@4.22.0\``,
    );
  }
  const i = a.info ?? {};
  return {
    vendor: i.vendor ?? '',
    architecture: i.architecture ?? '',
    description: i.description || i.device || '',
    software: isSoftware(a),
    maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
    maxBufferSize: a.limits.maxBufferSize,
  };
}

/** Loads Dawn and tfjs-backend-webgpu once; the adapter tfjs will use, or an error naming what is missing. */
export function loadWebgpu(): Promise<AdapterSummary> {
  if (loading === null) {
    loading = load().then((s) => (adapter = s));
  }
  return loading;
}

/** The adapter once loaded (null before, or when the backend is not webgpu). */
export function webgpuAdapter(): AdapterSummary | null {
  return adapter;
}

// ---- the pipeline counter ----------------------------------------------------------------------

let created = 0;
let createMs = 0;
let listener: ((ms: number, label: string) => void) | null = null;

/** Wraps the device's shader and pipeline creation of the initialised webgpu backend (once). */
export function installPipelineCounter(): void {
  const device = (tf.backend() as unknown as { device?: Record<string, DeviceFn> & { __batchgenCounted?: boolean } }).device;
  if (!device || device.__batchgenCounted) return;
  device.__batchgenCounted = true;
  const timed = (name: string, counts: boolean) => {
    const original = device[name].bind(device);
    device[name] = (...args: unknown[]) => {
      const t0 = performance.now();
      const out = original(...args);
      const ms = performance.now() - t0;
      createMs += ms;
      if (counts) {
        created += 1;
        listener?.(ms, String((args[0] as { label?: string } | undefined)?.label ?? 'pipeline'));
      }
      return out;
    };
  };
  timed('createShaderModule', false); // WGSL to the driver's code: part of a pipeline's cost
  timed('createComputePipeline', true);
  timed('createComputePipelineAsync', true);
}

/** Compute pipelines created in this process, and ms spent creating them and their shaders. */
export function pipelineStats(): { created: number; ms: number } {
  return { created, ms: createMs };
}

/** Called on each pipeline created (the retrace counter attributes it to the running variant). */
export function onPipelineCreated(f: (ms: number, label: string) => void): void {
  listener = f;
}

// ---- limits ------------------------------------------------------------------------------------

const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

/**
 * Throws when a tensor of `bytes` would not fit one storage binding of the adapter (WebGPU would
 * otherwise fail validation and compute garbage). `what` names the tensor, `context` the model.
 */
export function checkBindingLimit(bytes: number, what: string, context: string): void {
  if (adapter === null || tf.getBackend() !== 'webgpu') return;
  const limit = adapter.maxStorageBufferBindingSize;
  if (bytes > limit) {
    throw new Error(
      `${context}: ${what} is ${mb(bytes)}, over this WebGPU adapter's largest storage binding of ${mb(limit)} ` +
        `(${adapter.description || adapter.vendor}); use a smaller model or batch, or another backend`,
    );
  }
}

/**
 * Throws when the largest of a model's weight tensors (name, shape) would not fit one storage
 * binding; the message names the model's size and the limit.
 */
export function checkModelFits(model: string, totalBytes: number, tensors: [string, number[]][]): void {
  if (adapter === null || tf.getBackend() !== 'webgpu' || tensors.length === 0) return;
  const sized = tensors.map(([name, shape]) => ({ name, shape, bytes: 4 * shape.reduce((a, b) => a * b, 1) }));
  const largest = sized.reduce((a, t) => (t.bytes > a.bytes ? t : a));
  checkBindingLimit(
    largest.bytes,
    `${largest.name} [${largest.shape.join(', ')}]`,
    `model ${model} (${mb(totalBytes)} of float32 weights on the device)`,
  );
}
