/**
 * The retrace counter. Every tfjs kernel call goes through `engine.runKernel`; while a variant is
 * being warmed up, the tracker records each call's signature (kernel, input shapes and dtypes,
 * attributes). After warm-up, a signature the variant has not seen is a retrace: on the tensorflow
 * backend it is a new kernel compilation, on wasm a new XNNPACK operator or allocation pattern.
 * With native kernels, a oneDNN primitive created or a weight packed after warm-up counts too.
 * The cost is one string per kernel call, cheap enough to stay on in production.
 */
import { tf } from './backend.js';
import { onNativeCreation } from './native/creations.js';

interface Scope {
  seen: Set<string>;
  warming: boolean;
}

let active: Scope | null = null;
let installed = false;
let retraceTotal = 0;
const recent: string[] = [];

function signature(kernel: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown> | undefined): string {
  let s = kernel;
  for (const k in inputs) {
    const t = inputs[k];
    if (t) s += `|${k}:${t.dtype}[${t.shape.join(',')}]`;
  }
  if (attrs) s += `|${JSON.stringify(attrs, (_k, v) => (ArrayBuffer.isView(v) ? `<${(v as Float32Array).length}>` : v))}`;
  return s;
}

function countRetrace(sig: string): void {
  retraceTotal += 1;
  recent.push(sig);
  if (recent.length > 20) recent.shift();
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
  private readonly scope: Scope = { seen: new Set(), warming: true };
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
}

/** Kernel signatures first seen after their variant's warm-up, in this process. Must stay 0. */
export function retraces(): number {
  return retraceTotal;
}

/** The last few signatures that counted as retraces, for error reports. */
export function recentRetraces(): string[] {
  return [...recent];
}
