/**
 * An engine whose compiles are counted per compile key: a compile() call that made the engine
 * compile (its `stats().compiles` grew) adds to batchgen_compiles_total and its seconds to
 * batchgen_compile_seconds_total; a variant served from the cache adds nothing. Compiles are
 * sequential (the key holder compiles one variant at a time), so the growth is this call's.
 */
import { keyId } from '../shared/compile-key.js';
import type { Counter } from '../observability/metrics.js';
import type { Engine } from './engine.js';

/** The counters a metered engine moves. */
export interface CompileCounters {
  compiles: Counter<'key'>;
  compileSeconds: Counter<'key'>;
}

/** `engine`, with its compiles counted in `m`. Everything else is the engine's own. */
export function meteredEngine(engine: Engine, m: CompileCounters): Engine {
  return {
    get kind() {
      return engine.kind;
    },
    get backend() {
      return engine.backend;
    },
    get kernelProvider() {
      return engine.kernelProvider;
    },
    get kernels() {
      return engine.kernels;
    },
    get threads() {
      return engine.threads;
    },
    get kernelsReason() {
      return engine.kernelsReason;
    },
    loadModel: (spec) => engine.loadModel(spec),
    async compile(model, key, batchSize) {
      const before = engine.stats().compiles;
      const t0 = performance.now();
      const v = await engine.compile(model, key, batchSize);
      const n = engine.stats().compiles - before;
      if (n > 0) {
        const labels = { key: keyId(key) };
        m.compiles.inc(labels, n);
        m.compileSeconds.inc(labels, (performance.now() - t0) / 1000);
      }
      return v;
    },
    release: (key, batchSize) => engine.release(key, batchSize),
    stats: () => engine.stats(),
    dispose: () => engine.dispose(),
  };
}
