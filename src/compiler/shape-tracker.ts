/**
 * The retrace counter. Every tfjs kernel call goes through `engine.runKernel`; while a variant is
 * being warmed up, the tracker records each call's signature (kernel, input shapes and dtypes,
 * attributes). After warm-up, a signature the variant has not seen is a retrace: on the tensorflow
 * backend at most a new kernel set-up (its eager kernels are cached by op attributes, not shapes),
 * on wasm a new XNNPACK operator or allocation pattern.
 * With native kernels, a oneDNN primitive created or a weight packed after warm-up counts too.
 * On webgpu it also counts compute pipelines created (WGSL compiled) while a warmed variant runs:
 * a true recompilation. The cost is one string per kernel call, cheap enough to stay on in production.
 */
import { tf } from './backend.js';
import { onNativeCreation } from './native/creations.js';
import { onPipelineCreated } from './webgpu.js';

interface Scope {
  seen: Set<string>;
  warming: boolean;
  /** pipelines created, and ms spent creating them, during this scope's warm-up */
  pipelines: number;
  pipelineMs: number;
}

let active: Scope | null = null;
let installed = false;
let retraceTotal = 0;
let pipelinesAfter = 0;
const recent: string[] = [];

function countRetrace(what: string): void {
  retraceTotal += 1;
  recent.push(what);
  if (recent.length > 20) recent.shift();
}

// Pipeline creation is synchronous inside a kernel call, so `active` is the variant that caused it.
onPipelineCreated((ms, label) => {
  const scope = active;
  if (scope === null) return;
  if (scope.warming) {
    scope.pipelines += 1;
    scope.pipelineMs += ms;
  } else {
    pipelinesAfter += 1;
    countRetrace(`pipeline ${label}`);
  }
});

function signature(kernel: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown> | undefined): string {
  let s = kernel;
  for (const k in inputs) {
    const t = inputs[k];
    if (t) s += `|${k}:${t.dtype}[${t.shape.join(',')}]`;
  }
  if (attrs) s += `|${JSON.stringify(attrs, (_k, v) => (ArrayBuffer.isView(v) ? `<${(v as Float32Array).length}>` : v))}`;
  return s;
}

function install(): void {
  if (installed) return;
  installed = true;
  // A native primitive created or a weight packed after warm-up is set-up in a step: a retrace.
  onNativeCreation((what) => {
    if (active !== null && !active.warming) countRetrace(`native ${what}`);
  });
  const engine = tf.engine() as unknown as {
    runKernel(name: string, inputs: Record<string, tf.Tensor>, attrs?: Record<string, unknown>): unknown;
  };
  const original = engine.runKernel.bind(engine);
  engine.runKernel = (name, inputs, attrs) => {
    const scope = active;
    if (scope !== null) {
      const sig = signature(name, inputs, attrs);
      if (scope.warming) scope.seen.add(sig);
      else if (!scope.seen.has(sig)) {
        scope.seen.add(sig); // count each new signature once
        countRetrace(sig);
      }
    }
    return original(name, inputs, attrs);
  };
}

/** One variant's set of known kernel signatures. */
export class ShapeScope {
  private readonly scope: Scope = { seen: new Set(), warming: true, pipelines: 0, pipelineMs: 0 };
  constructor() {
    install();
  }
  /** Runs fn with this scope active; while warming, signatures are learned instead of counted. */
  run<T>(fn: () => T): T {
    const prev = active;
    active = this.scope;
    try {
      return fn();
    } finally {
      active = prev;
    }
  }
  endWarmup(): void {
    this.scope.warming = false;
  }
  get signatures(): number {
    return this.scope.seen.size;
  }
  /** Pipelines this variant's warm-up created (webgpu; 0 elsewhere), and the ms they took. */
  get warmupPipelines(): { count: number; ms: number } {
    return { count: this.scope.pipelines, ms: this.scope.pipelineMs };
  }
}

/**
 * Kernel signatures first seen after their variant's warm-up, plus pipelines created after it
 * (webgpu), in this process. Must stay 0.
 */
export function retraces(): number {
  return retraceTotal;
}

/** Compute pipelines created while a warmed variant ran (webgpu). Must stay 0. */
export function pipelinesAfterWarmup(): number {
  return pipelinesAfter;
}

/** The last few signatures that counted as retraces, for error reports. */
export function recentRetraces(): string[] {
  return [...recent];
}
