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
import { bannedTokens, needsBans } from './bans.js';
import { BeamRow, type Candidate } from './beam-search.js';
import { DeviceWeights, decodeStep, prefill } from './gpt2.js';
import { KvCache } from './kv-cache.js';
import {
  TOPK_FAST_MAX,
  applyAll,
  buildProcessors,
  logSoftmax,
  sampleRows,
  topKTopP,
  topKTopPCandidates,
  type BannedTokens,
  type ProcessorPlan,
  type RowParamTensors,
  type SeenTokens,
} from './logits.js';
import { RowRng } from './rng.js';
import { checkStopStrings } from './stop-strings.js';
import { ShapeScope } from './shape-tracker.js';
import type { RowRequest, RowResult } from './types.js';
import { assertServable, variantId, type CompileKey } from '../shared/compile-key.js';
import { BatchgenError, ShapeMismatchError } from '../shared/errors.js';
import { MAX_STOP_TOKEN_IDS, beamsOf, strategyOf, type GenerationDefaults, type ResolvedParams } from '../shared/params.js';

/** What a variant needs of a loaded model. */
export interface VariantModel {
  name: string;
  weights: DeviceWeights;
  defaults: GenerationDefaults;
  /** The tokenizer's decode: needed only for rows with stop strings. */
  decode?(ids: number[]): Promise<string>;
}

const NEG = -1e9;
/** The most stop ids of a row (EOS ids plus stop_token_ids), as the job payload bounds them. */
const MAX_STOP_IDS = 32;

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
    const c = model.weights.config;
    this.id = variantId({ ...key, B: batchSize });
    this.beams = beamsOf(key.strategy);
    this.cache = new KvCache(c.n_layer, batchSize * this.beams, c.n_head, key.P + key.N, c.n_embd / c.n_head);
    this.causal = tf.tidy(() => tf.linalg.bandPart(tf.ones([key.P, key.P]), -1, 0)) as tf.Tensor2D;
  }

  /** Allocates the variant and warms it up: every kernel signature it will use is seen here. */
  static async compile(model: VariantModel, key: CompileKey, batchSize: number): Promise<CompiledVariant> {
    if (key.model !== model.name) throw new BatchgenError('invalid_request', `compile key for model ${key.model} given model ${model.name}`);
    if (![key.P, key.N, batchSize].every((n) => Number.isInteger(n) && n >= 1)) {
      throw new BatchgenError('invalid_request', `variant P=${key.P} N=${key.N} B=${batchSize}: sizes must be positive integers`);
    }
    // Warm-up runs a full P-token prompt and decode steps after it: positions up to P + N - 1.
    assertServable(key, model.weights.config.n_positions);
    const t0 = performance.now();
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

  /** Bytes this variant holds on the device beyond the weights: the KV cache and per-step workspace. */
  get bytes(): number {
    const c = this.model.weights.config;
    const R = this.batchSize * this.beams;
    const workspace = 4 * R * (8 * c.vocab_size + 8 * 4 * c.n_embd + 2 * c.n_head * (this.key.P + this.key.N));
    return this.cache.bytes + workspace + 4 * this.key.P * this.key.P;
  }

  /** Generates for up to batchSize rows; missing rows are masked dummies. Throws on any other shape. */
  async run(rows: RowRequest[]): Promise<RowResult[]> {
    this.guard(rows);
    return this.runUnchecked(rows, {});
  }

  private guard(rows: RowRequest[]): void {
    const { P, N, strategy } = this.key;
    const V = this.model.weights.config.vocab_size;
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
        if (!this.model.decode) throw new BatchgenError('unsupported_parameter', `row ${i}: stop strings need the model's tokenizer, and variant ${this.id} has none`);
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
    const owned: tf.Tensor[] = [];
    try {
      return await this.generate(rows, opts, owned);
    } finally {
      tf.dispose(owned);
      this.busy = false;
      if (this.disposeWhenIdle) this.dispose();
    }
  }

  private async generate(rows: RowRequest[], opts: RunOptions, owned: tf.Tensor[]): Promise<RowResult[]> {
    const w = this.model.weights;
    const { P, N, strategy } = this.key;
    const V = w.config.vocab_size;
    const k = this.beams;
    const B = this.batchSize;
    const R = B * k;
    const T = P + N;
    const pad = this.model.defaults.pad_token_id;
    const maxSteps = Math.min(N, opts.maxSteps ?? N);
    const keep = <X extends tf.Tensor>(t: X): X => {
      owned.push(t);
      return t;
    };
    const onDevice = <X extends tf.Tensor>(f: () => X): X => this.scope.run(() => tf.tidy(f));

    // Host inputs: batch item b fills rows b*k .. b*k+k-1; missing items are one-token dummies.
    const params = Array.from({ length: B }, (_, b) => (b < rows.length ? rows[b].params : rows[0].params));
    const prompts = Array.from({ length: B }, (_, b) => (b < rows.length ? rows[b].promptIds : [pad]));
    const ids = new Int32Array(R * P).fill(pad);
    const pos = new Int32Array(R * P);
    const keyMask = new Float32Array(R * P);
    const decodeBias = new Float32Array(R * T).fill(NEG);
    for (let r = 0; r < R; r++) {
      const prompt = prompts[Math.floor(r / k)];
      const off = P - prompt.length;
      prompt.forEach((id, j) => {
        ids[r * P + off + j] = id;
        pos[r * P + off + j] = j;
        keyMask[r * P + off + j] = 1;
        decodeBias[r * T + off + j] = 0;
      });
    }
    const perRow = (f: (p: ResolvedParams) => number, dtype: 'float32' | 'int32' = 'float32') =>
      keep(tf.tensor2d(Array.from({ length: R }, (_, r) => f(params[Math.floor(r / k)])), [R, 1], dtype));
    const rowParams: RowParamTensors = {
      penalty: perRow((p) => p.repetition_penalty),
      invTemperature: perRow((p) => 1 / p.temperature),
      topKIndex: perRow((p) => (p.top_k > 0 ? Math.min(p.top_k, V) : V) - 1, 'int32'),
      topP: perRow((p) => p.top_p),
    };
    const plan: ProcessorPlan = {
      penalty: params.some((p) => p.repetition_penalty !== 1),
      ban: needsBans(params),
      topk: params.every((p) => p.top_p >= 1 && p.top_k <= TOPK_FAST_MAX) ? 'fast' : 'full',
    };
    const topKOff = perRow((p) => (p.top_k === 0 ? 1 : 0));
    const M = P + N;

    // Prefill: the whole prompt, filling cache positions [0, P).
    this.lastRun = { prefillMs: 0, steps: 0, decodeMs: 0 };
    const tPrefill = performance.now();
    let tDecode = 0;
    let steps = 0;
    let logits = onDevice(() => {
      const mask = tf.tensor2d(keyMask, [R, P]);
      const bias = tf.mul(tf.sub(1, tf.mul(this.causal, tf.reshape(mask, [R, 1, 1, P]))), NEG) as tf.Tensor4D;
      return prefill(w, this.cache, tf.tensor2d(ids, [R, P], 'int32'), tf.tensor2d(pos, [R, P], 'int32'), bias);
    });

    const lens = prompts.map((p) => p.length);
    const live = rows.length;
    const stopSets = params.map((p) => new Set(p.stop_ids));
    const out: RowResult[] = Array.from({ length: B }, () => ({ tokenIds: [], finishReason: 'length' as const }));
    const finished = Array.from({ length: B }, (_, b) => b >= live);
    const rngs = params.map((p) => new RowRng(p.seed));
    const beamRows =
      k > 1
        ? params.map((p, b) => {
            const row = new BeamRow({
              numBeams: k,
              maxNewTokens: p.max_new_tokens,
              lengthPenalty: p.length_penalty,
              earlyStopping: p.early_stopping,
              stopIds: p.stop_ids,
            });
            row.done = b >= live;
            return row;
          })
        : [];
    // Hugging Face keeps max(2, 1 + #stop ids)·k candidates per step; the variant fetches enough for
    // the model's EOS ids plus the most a request can add, and each row uses its own prefix.
    const candidates = Math.min(k * V, BeamRow.candidatesNeeded(k, this.model.defaults.eos_token_id.length + MAX_STOP_TOKEN_IDS));

    try {
      for (let t = 0; t < maxSteps; t++) {
        const seen = plan.penalty ? this.seenTokens(R, M, (r) => {
          const b = Math.floor(r / k);
          return k === 1 ? [prompts[b], out[b].tokenIds] : [prompts[b], beamRows[b].running[r % k].tokens];
        }) : null;
        const banned = plan.ban ? this.bannedTokens(R, M + MAX_STOP_IDS, (r) => {
          const b = Math.floor(r / k);
          return bannedTokens(params[b], prompts[b], k === 1 ? out[b].tokenIds : beamRows[b].running[r % k].tokens);
        }) : null;
        const processors = buildProcessors(strategy, plan, rowParams, seen, topKOff, banned);
        const disposeStepInputs = () => {
          if (seen) tf.dispose([seen.pairs, seen.mask]);
          if (banned) tf.dispose([banned.pairs, banned.mask]);
        };
        const next = new Array<number>(R).fill(pad);
        let from: number[] | null = null;

        if (k === 1) {
          let scores = onDevice(() => applyAll(logits, processors));
          disposeStepInputs();
          if (strategy === 'sample' && plan.topk === 'full') scores = await this.topKTopP(scores, rowParams, topKOff);
          const uniforms = strategy === 'sample' ? tf.tensor2d(rngs.map((g) => g.next()), [R, 1]) : null;
          const chosen = onDevice(() => (uniforms ? sampleRows(scores, uniforms) : (tf.argMax(scores, 1) as tf.Tensor1D)));
          tf.dispose([scores, ...(uniforms ? [uniforms] : [])]);
          const picked = await chosen.data();
          chosen.dispose();
          for (let b = 0; b < B; b++) {
            if (finished[b]) continue;
            const x = picked[b];
            out[b].tokenIds.push(x);
            next[b] = x;
            if (stopSets[b].has(x)) {
              finished[b] = true;
              out[b].finishReason = 'eos';
              continue;
            }
            const stops = params[b].stop_strings;
            const hit = stops?.length ? await checkStopStrings(out[b].tokenIds, stops, (ids) => this.model.decode!(ids)) : null;
            if (hit) {
              finished[b] = true;
              out[b].finishReason = 'stop';
              out[b].text = hit.text;
            } else if (out[b].tokenIds.length >= params[b].max_new_tokens) finished[b] = true;
          }
        } else {
          const scores = tf.tensor2d(beamRows.flatMap((row) => row.runningScores), [R, 1]);
          const top = this.scope.run(() =>
            tf.tidy(() => {
              const lp = tf.add(applyAll(logSoftmax(logits), processors), scores);
              const { values, indices } = tf.topk(tf.reshape(lp, [B, k * V]), candidates, true);
              return [values, indices];
            }),
          );
          scores.dispose();
          disposeStepInputs();
          const [vals, idxs] = await Promise.all(top.map((x) => x.data()));
          tf.dispose(top);
          from = Array.from({ length: R }, (_, r) => r);
          for (let b = 0; b < B; b++) {
            const row = beamRows[b];
            if (row.done) continue;
            const cands: Candidate[] = [];
            for (let c = 0; c < candidates; c++) {
              const flat = idxs[b * candidates + c];
              cands.push({ score: vals[b * candidates + c], beam: Math.floor(flat / V), token: flat % V });
            }
            const step = row.step(cands, t);
            step.from.forEach((f, j) => {
              from![b * k + j] = b * k + f;
              next[b * k + j] = step.tokens[j];
            });
            if (row.done) {
              finished[b] = true;
              out[b] = row.result();
            }
          }
        }
        tf.dispose(logits);
        if (t === 0) this.lastRun.prefillMs = performance.now() - tPrefill;
        if (finished.every(Boolean) || t + 1 >= maxSteps) break;

        // Feed the chosen tokens at cache slot P + t.
        if (from) this.cache.reorder(from);
        for (let r = 0; r < R; r++) decodeBias[r * T + P + t] = 0;
        if (steps === 0) tDecode = performance.now();
        steps += 1;
        await yieldToEventLoop();
        logits = onDevice(() =>
          decodeStep(
            w,
            this.cache,
            tf.tensor1d(next, 'int32'),
            tf.tensor1d(Array.from({ length: R }, (_, r) => lens[Math.floor(r / k)] + t), 'int32'),
            P + t,
            tf.tensor3d(decodeBias, [R, 1, T]),
          ),
        );
      }
    } finally {
      tf.dispose(logits);
    }
    this.lastRun.steps = steps;
    this.lastRun.decodeMs = steps > 0 ? performance.now() - tDecode : 0;
    if (k > 1) beamRows.forEach((row, b) => b < live && !finished[b] && (out[b] = row.result()));
    return out.slice(0, live);
  }

  /**
   * Top-k and top-p for a batch that needs more than the small top-k: from the nucleus candidates
   * when every row's kept set lies within them (one readback decides), else from a full sort. Warm-up
   * runs both, so that neither is a retrace later. Takes ownership of `scores`.
   */
  private async topKTopP(scores: tf.Tensor2D, p: RowParamTensors, topKOff: tf.Tensor2D): Promise<tf.Tensor2D> {
    const { filtered, fits } = this.scope.run(() => tf.tidy(() => topKTopPCandidates(scores, p, topKOff)));
    const allFit = (await fits.data()).every((f) => f === 1);
    fits.dispose();
    if (allFit && !this.warming) {
      scores.dispose();
      return filtered;
    }
    filtered.dispose();
    const full = this.scope.run(() => tf.tidy(() => topKTopP(p)(scores)));
    scores.dispose();
    return full;
  }

  /** Each row's distinct seen tokens (prompt and generated), padded to M, as device tensors. */
  private seenTokens(R: number, M: number, tokensOf: (r: number) => number[][]): SeenTokens {
    const pairs = new Int32Array(R * M * 2);
    const mask = new Float32Array(R * M);
    for (let r = 0; r < R; r++) {
      const uniq = [...new Set(tokensOf(r).flat())];
      for (let j = 0; j < M; j++) {
        const id = uniq[j] ?? uniq[0];
        pairs[(r * M + j) * 2] = r;
        pairs[(r * M + j) * 2 + 1] = id;
        mask[r * M + j] = j < uniq.length ? 1 : 0;
      }
    }
    return { pairs: tf.tensor2d(pairs, [R * M, 2], 'int32'), mask: tf.tensor2d(mask, [R, M]) };
  }

  /** Each row's banned next tokens, padded to W, as device tensors. */
  private bannedTokens(R: number, W: number, bansOf: (r: number) => number[]): BannedTokens {
    const pairs = new Int32Array(R * W * 2);
    const mask = new Float32Array(R * W);
    for (let r = 0; r < R; r++) {
      const bans = bansOf(r);
      if (bans.length > W) throw new BatchgenError('generation_failed', `row ${r}: ${bans.length} banned tokens exceed the width ${W}`);
      for (let j = 0; j < W; j++) {
        pairs[(r * W + j) * 2] = r;
        pairs[(r * W + j) * 2 + 1] = bans[j] ?? bans[0] ?? 0;
        mask[r * W + j] = j < bans.length ? 1 : 0;
      }
    }
    return { pairs: tf.tensor2d(pairs, [R * W, 2], 'int32'), mask: tf.tensor1d(mask) };
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
