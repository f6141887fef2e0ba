/**
 * A compiled variant: one compile key at one batch size. Owns its static KV cache and the set of
 * kernel signatures learned during warm-up; `run` accepts only inputs that fit its shapes and
 * throws on anything else (a retrace refused, never done silently).
 *
 * The generate loop is driven from the host: the device does the forward pass and the logits
 * processors; the host reads back only the chosen token per row (or the best candidates per item for
 * beam search), decides which rows stop, and feeds the next ids. Between steps it yields to the event
 * loop so timers (queue lock renewal) run during long batches.
 */
import { tf } from './backend.js';
import type { DeviceModel } from './family.js';
import { KvCache } from './kv-cache.js';
import { markConstants } from './native/provider.js';
import type { OnDevice } from './logits.js';
import { NEG, openDecodeSlot, packBatch } from './packing.js';
import { RowParams } from './row-params.js';
import { ShapeScope } from './shape-tracker.js';
import { BeamStrategy } from './strategies/beam.js';
import { SampleStrategy } from './strategies/sample.js';
import type { DecodeStrategy, StepChoice } from './strategies/strategy.js';
import type { RowRequest, RowResult } from './types.js';
import { assertServable, keyId, variantId, type CompileKey } from '../shared/compile-key.js';
import { BatchgenError, ShapeMismatchError } from '../shared/errors.js';
import { beamsOf, strategyOf, type GenerationDefaults, type ResolvedParams } from '../shared/params.js';

/** What a variant needs of a loaded model. */
export interface VariantModel {
  name: string;
  weights: DeviceModel;
  defaults: GenerationDefaults;
  /** The tokenizer's decode: needed only for rows with stop strings. */
  decode?(ids: number[]): Promise<string>;
}

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface RunOptions {
  /** Stop after this many generated tokens (warm-up uses 2: every decode step has the same shapes). */
  maxSteps?: number;
}

/** Timings of the last batch a variant ran. */
export interface RunStats {
  prefillMs: number;
  /** Decode steps run (the first token comes from the prefill). */
  steps: number;
  decodeMs: number;
}

export class CompiledVariant {
  readonly id: string;
  readonly beams: number;
  /** Milliseconds spent compiling and warming up. */
  compileMs = 0;
  lastRun: RunStats = { prefillMs: 0, steps: 0, decodeMs: 0 };
  private readonly cache: KvCache;
  private readonly causal: tf.Tensor2D;
  private readonly scope = new ShapeScope();
  private busy = false;
  private warming = true;
  private disposed = false;
  private disposeWhenIdle = false;

  private constructor(
    private readonly model: VariantModel,
    readonly key: CompileKey,
    readonly batchSize: number,
  ) {
    const a = model.weights.arch;
    this.id = variantId({ ...key, B: batchSize });
    this.beams = beamsOf(key.strategy);
    this.cache = new KvCache(a.layers, batchSize * this.beams, a.kvHeads, key.P + key.N, a.headDim);
    this.causal = tf.tidy(() => tf.linalg.bandPart(tf.ones([key.P, key.P]), -1, 0)) as tf.Tensor2D;
  }

  /** Allocates the variant and warms it up: every kernel signature it will use is seen here. */
  static async compile(model: VariantModel, key: CompileKey, batchSize: number): Promise<CompiledVariant> {
    if (key.model !== model.name)
      throw new BatchgenError('invalid_request', `compile key for model ${key.model} given model ${model.name}`);
    if (![key.P, key.N, batchSize].every((n) => Number.isInteger(n) && n >= 1)) {
      throw new BatchgenError('invalid_request', `variant P=${key.P} N=${key.N} B=${batchSize}: sizes must be positive integers`);
    }
    // Warm-up runs a full P-token prompt and decode steps after it: positions up to P + N - 1.
    const window = model.weights.arch.slidingWindow;
    if (window !== null && key.P + key.N > window) {
      throw new BatchgenError(
        'context_length_exceeded',
        `compile key ${keyId(key)}: P + N = ${key.P + key.N} is over the model's sliding_window ${window}; ` +
          'attention within a window is not implemented, so no variant may span more than the window',
      );
    }
    assertServable(key, model.weights.arch.contextLength);
    const t0 = performance.now();
    markConstants(model.weights); // native kernels pack these once, in the warm-up below
    const v = new CompiledVariant(model, key, batchSize);
    try {
      for (const rows of v.warmupBatches()) await v.runUnchecked(rows, { maxSteps: Math.min(2, key.N) });
    } catch (e) {
      v.dispose();
      throw e;
    }
    v.scope.endWarmup();
    v.warming = false;
    v.compileMs = performance.now() - t0;
    return v;
  }

  /** Compute pipelines its warm-up created (webgpu; 0 elsewhere) and the ms spent creating them. */
  get warmupPipelines(): { count: number; ms: number } {
    return this.scope.warmupPipelines;
  }

  /** Bytes this variant holds on the device beyond the weights: the KV cache and per-step workspace. */
  get bytes(): number {
    const a = this.model.weights.arch;
    const R = this.batchSize * this.beams;
    const workspace = 4 * R * (8 * a.vocabSize + 8 * Math.max(a.intermediate, 4 * a.hidden) + 2 * a.heads * (this.key.P + this.key.N));
    return this.cache.bytes + workspace + 4 * this.key.P * this.key.P;
  }

  /** Generates for up to batchSize rows; missing rows are masked dummies. Throws on any other shape. */
  async run(rows: RowRequest[]): Promise<RowResult[]> {
    this.guard(rows);
    return this.runUnchecked(rows, {});
  }

  private guard(rows: RowRequest[]): void {
    const { P, N, strategy } = this.key;
    const V = this.model.weights.arch.vocabSize;
    if (this.disposed) throw new BatchgenError('generation_failed', `variant ${this.id} was disposed (evicted)`);
    if (rows.length < 1 || rows.length > this.batchSize) {
      throw new ShapeMismatchError(`variant ${this.id} takes 1 to ${this.batchSize} rows, got ${rows.length}`);
    }
    rows.forEach((r, i) => {
      const n = r.promptIds.length;
      if (n < 1 || n > P) throw new ShapeMismatchError(`variant ${this.id}: row ${i} has ${n} prompt tokens, bucket is ${P}`);
      if (r.params.max_new_tokens > N) {
        throw new ShapeMismatchError(`variant ${this.id}: row ${i} asks max_new_tokens ${r.params.max_new_tokens}, bucket is ${N}`);
      }
      if (strategyOf(r.params) !== strategy) {
        throw new ShapeMismatchError(`variant ${this.id}: row ${i} needs strategy ${strategyOf(r.params)}`);
      }
      if (r.promptIds.some((id) => !Number.isInteger(id) || id < 0 || id >= V)) {
        throw new BatchgenError('invalid_request', `row ${i}: token ids must be integers in [0, ${V})`);
      }
      if (r.params.stop_strings?.length) {
        if (this.beams > 1) throw new BatchgenError('unsupported_parameter', `row ${i}: stop strings with beam search are not supported`);
        if (!this.model.decode)
          throw new BatchgenError(
            'unsupported_parameter',
            `row ${i}: stop strings need the model's tokenizer, and variant ${this.id} has none`,
          );
      }
    });
  }

  /**
   * Warm-up inputs: full-length prompts, every processor on (repetition penalty, min_new_tokens and
   * no_repeat_ngram_size bans), and for sampling both with and without top-k/top-p.
   */
  private warmupBatches(): RowRequest[][] {
    const d = this.model.defaults;
    const base: ResolvedParams = {
      max_new_tokens: this.key.N,
      do_sample: this.key.strategy === 'sample',
      temperature: 0.7,
      top_k: 50,
      top_p: 0.9,
      repetition_penalty: 1.2,
      seed: 1,
      num_beams: this.beams,
      length_penalty: 1,
      early_stopping: false,
      stop_ids: d.eos_token_id,
      pad_token_id: d.pad_token_id,
      min_new_tokens: this.key.N,
      no_repeat_ngram_size: 2,
    };
    const prompt = Array.from({ length: this.key.P }, (_, i) => i % 256);
    const batch = (params: ResolvedParams) => Array.from({ length: this.batchSize }, () => ({ promptIds: prompt, params }));
    // Sampling has two top-k paths (full sort for top-p, small top-k otherwise): warm both.
    return this.key.strategy === 'sample' ? [batch(base), batch({ ...base, top_p: 1 })] : [batch(base)];
  }

  private async runUnchecked(rows: RowRequest[], opts: RunOptions): Promise<RowResult[]> {
    if (this.busy) throw new BatchgenError('generation_failed', `variant ${this.id} is already running a batch`);
    this.busy = true;
    try {
      return await this.generate(rows, opts);
    } finally {
      this.busy = false;
      if (this.disposeWhenIdle) this.dispose();
    }
  }

  /** Device work in a tf.tidy, under this variant's shape scope (learned in warm-up, else checked). */
  private readonly onDevice: OnDevice = (f) => this.scope.run(() => tf.tidy(f));

  private async generate(rows: RowRequest[], opts: RunOptions): Promise<RowResult[]> {
    const w = this.model.weights;
    const { P, N, strategy } = this.key;
    const k = this.beams;
    const B = this.batchSize;
    const pad = this.model.defaults.pad_token_id;
    const maxSteps = Math.min(N, opts.maxSteps ?? N);
    const live = rows.length;

    // 1. Pack on the host: item b fills rows b*k .. b*k+k-1; missing items are one-token dummies.
    const params = Array.from({ length: B }, (_, b) => (b < live ? rows[b].params : rows[0].params));
    const prompts = Array.from({ length: B }, (_, b) => (b < live ? rows[b].promptIds : [pad]));
    const packed = packBatch(prompts, P, N, k, pad);
    const R = packed.R;

    // 2. Per-row parameters on the device, and the processor plan they imply.
    const rowParams = new RowParams(params, k, w.arch.vocabSize);
    const chooser = this.strategyFor(params, live, rowParams);
    this.lastRun = { prefillMs: 0, steps: 0, decodeMs: 0 };
    const tPrefill = performance.now();
    let tDecode = 0;
    let steps = 0;
    let logits: tf.Tensor2D | null = null;
    try {
      // 3. Prefill: the whole prompt, filling cache slots [0, P); logits of each row's last token.
      logits = this.onDevice(() => {
        const mask = tf.tensor2d(packed.keyMask, [R, P]);
        const bias = tf.mul(tf.sub(1, tf.mul(this.causal, tf.reshape(mask, [R, 1, 1, P]))), NEG) as tf.Tensor4D;
        return w.prefill(this.cache, tf.tensor2d(packed.ids, [R, P], 'int32'), tf.tensor2d(packed.pos, [R, P], 'int32'), bias);
      });
      for (let t = 0; t < maxSteps; t++) {
        // 4. This step's processors: penalty and bans need each row's tokens so far.
        const processors = rowParams.stepProcessors(strategy, P + N, prompts, (r) => chooser.generatedOf(r));
        // 5. Choose the next token of each row (the strategy's device part and one readback), and
        //    book-keep on the host: what each row generated, which rows finished and why.
        let choice: StepChoice;
        try {
          choice = await chooser.step(logits, processors.list, t);
        } finally {
          processors.dispose();
        }
        tf.dispose(logits);
        if (t === 0) this.lastRun.prefillMs = performance.now() - tPrefill;
        // 6. Stop when every item has finished or the step budget is spent.
        if (chooser.done || t + 1 >= maxSteps) break;
        // 7. Beam search: each row's cache continues the beam it extends.
        if (choice.from) this.cache.reorder(choice.from);
        // 8. Open cache slot P + t; yield so timers run between steps.
        const positions = openDecodeSlot(packed, P, t);
        if (steps === 0) tDecode = performance.now();
        steps += 1;
        await yieldToEventLoop();
        // 9. Decode step: feed the chosen tokens at slot P + t, get the next logits.
        const next = choice.next;
        logits = this.onDevice(() =>
          w.decodeStep(
            this.cache,
            tf.tensor1d(next, 'int32'),
            tf.tensor1d(positions, 'int32'),
            P + t,
            tf.tensor3d(packed.decodeBias, [R, 1, packed.T]),
          ),
        );
      }
    } finally {
      if (logits) tf.dispose(logits);
      rowParams.dispose();
    }
    this.lastRun.steps = steps;
    this.lastRun.decodeMs = steps > 0 ? performance.now() - tDecode : 0;
    return chooser.results(live);
  }

  /** The decoding strategy of this variant's key, for one batch. */
  private strategyFor(params: ResolvedParams[], live: number, rowParams: RowParams): DecodeStrategy {
    const { onDevice } = this;
    const pad = this.model.defaults.pad_token_id;
    if (this.beams > 1) {
      const V = this.model.weights.arch.vocabSize;
      return new BeamStrategy(params, live, { k: this.beams, V, eosIds: this.model.defaults.eos_token_id.length, onDevice, pad });
    }
    const decode = this.model.decode?.bind(this.model);
    return new SampleStrategy(params, live, {
      sample: this.key.strategy === 'sample',
      rowParams,
      onDevice,
      warming: this.warming,
      pad,
      decode,
    });
  }

  /** Frees the cache; a variant evicted while running is freed when its batch ends. */
  dispose(): void {
    if (this.disposed) return;
    if (this.busy) {
      this.disposeWhenIdle = true;
      return;
    }
    this.disposed = true;
    this.cache.dispose();
    this.causal.dispose();
  }
}
