/**
 * Which compile keys this worker holds: compiling and warming a key's variants before any job of it
 * is taken, releasing idle keys for a key with work (planKeys), the cache budget, failed compiles
 * retried after a while and refusals (KeyBook), and registry pruning.
 *
 * Invariant: a key compiles only while the worker holds no job (compiles block the event loop, so
 * no lock could be renewed meanwhile). refresh() is called between batches and asserts it.
 */
import type { Redis } from 'ioredis';
import { parseKeyId, type CompileKey } from '../shared/compile-key.js';
import type { Keyspace } from '../shared/keys.js';
import { readHeartbeats, isLive } from '../shared/heartbeats.js';
import { readAssignment } from '../shared/assignments.js';
import {
  hasWork,
  NO_WORK,
  prunableEntries,
  pruneRegistryEntry,
  queueWork,
  readRegistry,
  type QueueWork,
  type RegistryEntry,
} from '../shared/registry.js';
import type { Logger } from '../observability/logger.js';
import type { Engine, EngineModel, EngineVariant } from './engine.js';
import { afterVariantCompile, beforeCompile } from './faults.js';
import { HeldQueue } from './held-queue.js';
import { KeyBook } from './key-book.js';
import { planAssigned, planKeys, type RefusalReason } from './key-policy.js';
import type { ResolvedOptions } from './options.js';
import { invariant } from './invariant.js';

/** A key whose compile failed is tried again after this long. */
export const KEY_RETRY_MS = 30_000;

export interface KeyHolderContext {
  redis: Redis;
  keys: Keyspace;
  engine: Engine;
  models: ReadonlyMap<string, EngineModel>;
  opts: ResolvedOptions;
  log: Logger;
  /** true once a stop was asked for: no more keys are compiled */
  stopping(): boolean;
  /** jobs taken and not settled (must be 0 whenever a key compiles) */
  jobsInHand(): number;
  /** a fresh lock token */
  nextToken(): string;
}

type Refusal = { key: string; reason: RefusalReason; work: QueueWork };

/** The keys this worker holds, and what it remembers about those it does not. */
export class KeyHolder {
  private readonly held = new Map<string, HeldQueue>();
  /** failed compiles and refusals */
  readonly book = new KeyBook();
  private lastPruneAt = 0;
  /** assigned keys this worker cannot hold, logged once each */
  private readonly foreign = new Set<string>();
  /** seconds each key took to compile and warm here (last time), released keys included */
  private readonly compileSeconds = new Map<string, number>();

  constructor(private readonly ctx: KeyHolderContext) {}

  get size(): number {
    return this.held.size;
  }

  get(id: string): HeldQueue | undefined {
    return this.held.get(id);
  }

  ids(): string[] {
    return [...this.held.keys()];
  }

  queues(): HeldQueue[] {
    return [...this.held.values()];
  }

  /** Seconds each key compiled here took (last compile), for the heartbeat. */
  compileReport(): Record<string, number> {
    return Object.fromEntries(this.compileSeconds);
  }

  /** Device bytes of each held key's variants, for the heartbeat. */
  bytesReport(): Record<string, number> {
    return Object.fromEntries([...this.held].map(([id, h]) => [id, h.bytes]));
  }

  /** Jobs prefetched by completions and not yet run, over every held key. */
  prefetchedCount(): number {
    let n = 0;
    for (const h of this.held.values()) n += h.prefetched.length;
    return n;
  }

  /**
   * Holds, releases and prunes keys (compiles happen here, with no job held). Explicit keys are all
   * held (cache budget permitting). Otherwise the registry keys of this worker's models that have
   * work are held, oldest entry first; idle keys are released for a key with work that no one
   * holds (planKeys); refused keys and failed compiles are tried again later.
   */
  async refresh(): Promise<void> {
    invariant(this.ctx.jobsInHand() === 0, `keys are refreshed (and compiled) only with no job in hand, but ${this.ctx.jobsInHand()} are`);
    const { opts, redis, keys } = this.ctx;
    const now = Date.now();
    if (opts.assigned) {
      await this.refreshAssigned(now);
      const entries = await readRegistry(redis, keys);
      await this.pruneRegistry(entries, now).catch((e: Error) => this.ctx.log.warn({ err: e.message }, 'could not prune the registry'));
      return;
    }
    const entries: RegistryEntry[] = opts.keys
      ? opts.keys.map((id) => ({ id, key: parseKeyId(id), updatedAt: 0 }))
      : await readRegistry(redis, keys);
    const mine = entries.filter((e) => this.ctx.models.has(e.key.model));
    const work = await queueWork(
      redis,
      keys,
      mine.map((e) => e.id),
    );
    this.book.noteWork(work, now);
    const workOf = (id: string): QueueWork => work.get(id) ?? NO_WORK;
    const candidates = mine.filter((e) => !this.held.has(e.id) && this.book.canTry(e.id, now));
    const { toHold, refused } = opts.keys ? { toHold: candidates, refused: [] as Refusal[] } : await this.plan(candidates, workOf);
    for (const e of toHold) {
      if (this.ctx.stopping()) return;
      // the engine's cache never evicts (an evicted variant would have to compile again while jobs wait):
      // the budget is enforced here, by holding no more keys once it is reached
      if (this.ctx.engine.stats().bytes >= opts.cacheBudgetBytes) {
        refused.push({ key: e.id, reason: 'cache_budget', work: workOf(e.id) });
        continue;
      }
      await this.tryHold(e, now, workOf(e.id));
    }
    this.noteRefusals(refused);
    if (!opts.keys)
      await this.pruneRegistry(entries, now).catch((e: Error) => this.ctx.log.warn({ err: e.message }, 'could not prune the registry'));
  }

  /**
   * Assigned mode: holds exactly the keys of this worker's assignment set (read now). Keys taken
   * away are released (there is no job in hand: refresh asserts it); keys newly assigned are
   * compiled before any of their jobs is taken, while the variants fit the cache budget.
   */
  private async refreshAssigned(now: number): Promise<void> {
    const { opts, redis, keys, log } = this.ctx;
    const assigned = await readAssignment(redis, keys, opts.id);
    const servable = (id: string): boolean => {
      try {
        return this.ctx.models.has(parseKeyId(id).model);
      } catch {
        return false;
      }
    };
    const plan = planAssigned(this.ids(), assigned, servable);
    for (const id of plan.release) await this.release(id, 'no longer assigned to this worker');
    for (const id of plan.foreign) {
      if (this.foreign.has(id)) continue;
      this.foreign.add(id);
      log.warn(
        { key: id, models: [...this.ctx.models.keys()] },
        'assigned a key this worker cannot hold (not a key, or a model it has not loaded)',
      );
    }
    const work = await queueWork(redis, keys, plan.hold);
    this.book.noteWork(work, now);
    const refused: Refusal[] = [];
    for (const id of plan.hold) {
      if (this.ctx.stopping()) return;
      if (!this.book.canTry(id, now)) continue;
      if (this.ctx.engine.stats().bytes >= opts.cacheBudgetBytes) {
        refused.push({ key: id, reason: 'cache_budget', work: work.get(id) ?? NO_WORK });
        continue;
      }
      await this.tryHold({ id, key: parseKeyId(id), updatedAt: 0 }, now, work.get(id) ?? NO_WORK);
    }
    this.noteRefusals(refused);
  }

  /** Registry keys: releases idle keys as planKeys says; returns what to hold (oldest entry first) and what is refused. */
  private async plan(
    candidates: RegistryEntry[],
    workOf: (id: string) => QueueWork,
  ): Promise<{ toHold: RegistryEntry[]; refused: Refusal[] }> {
    const sorted = [...candidates].sort((a, b) => a.updatedAt - b.updatedAt);
    const elsewhere = sorted.some((c) => hasWork(workOf(c.id))) ? await this.keysHeldElsewhere() : new Set<string>();
    const plan = planKeys({
      held: this.queues().map((h) => ({
        id: h.id,
        lastServedAt: Math.max(h.lastServedAt, h.heldAt),
        bytes: h.bytes,
        work: workOf(h.id),
        inHand: h.prefetched.length,
      })),
      candidates: sorted.map((c) => ({ id: c.id, work: workOf(c.id), heldElsewhere: elsewhere.has(c.id) })),
      maxKeys: this.ctx.opts.maxKeys,
      budgetBytes: this.ctx.opts.cacheBudgetBytes,
    });
    for (const id of plan.release) await this.release(id, 'idle, released for a key with work');
    const byId = new Map(sorted.map((c) => [c.id, c]));
    return {
      toHold: plan.hold.map((id) => byId.get(id)!),
      refused: plan.refused.map((r) => ({ key: r.id, reason: r.reason, work: workOf(r.id) })),
    };
  }

  /** Compiles and holds a key; a failed compile is remembered and tried again after KEY_RETRY_MS. */
  private async tryHold(e: RegistryEntry, now: number, work: QueueWork): Promise<void> {
    try {
      await this.hold(e.id, e.key, this.ctx.models.get(e.key.model)!);
      this.book.compiled(e.id);
    } catch (err) {
      const msg = (err as Error).message;
      this.ctx.log.error({ key: e.id, err: msg, retryInMs: KEY_RETRY_MS }, 'cannot compile key: not holding it for now');
      this.book.compileFailed(e.id, msg, now, Date.now() + KEY_RETRY_MS, work);
    }
  }

  /** Records the refusals; a key newly refused is logged once. */
  private noteRefusals(refused: Refusal[]): void {
    const { opts, engine, log } = this.ctx;
    for (const id of this.book.setRefused(refused)) {
      const r = refused.find((x) => x.key === id)!;
      const why =
        r.reason === 'max_keys'
          ? 'maxKeys reached and no held key is idle'
          : 'the variants held fill the cache budget (raise --cache-mb, or serve it elsewhere)';
      log.warn(
        { key: id, maxKeys: opts.maxKeys, bytes: engine.stats().bytes, budget: opts.cacheBudgetBytes, waiting: r.work.waiting },
        `not holding key: ${why}`,
      );
    }
  }

  /** Keys held by other live workers (from their heartbeats). */
  private async keysHeldElsewhere(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const h of await readHeartbeats(this.ctx.redis, this.ctx.keys))
      if (h.id !== this.ctx.opts.id && isLive(h)) for (const k of h.keys) out.add(k);
    return out;
  }

  /** Removes registry entries with no work not written for registryTtlMs (at most once a minute). */
  private async pruneRegistry(entries: RegistryEntry[], now: number): Promise<void> {
    const { redis, keys, opts, log } = this.ctx;
    const ttl = opts.registryTtlMs;
    if (now - this.lastPruneAt < Math.min(ttl, 60_000)) return;
    this.lastPruneAt = now;
    const old = entries.filter((e) => e.updatedAt + ttl < now);
    if (old.length === 0) return;
    const work = await queueWork(
      redis,
      keys,
      old.map((e) => e.id),
    );
    for (const id of prunableEntries(old, work, now, ttl)) {
      if (await pruneRegistryEntry(redis, keys, id, now - ttl))
        log.info({ key: id, ttlMs: ttl }, 'registry entry removed: no work for a while');
    }
  }

  /** Gives a key up: its BullMQ worker is closed and its variants disposed (memory given back). */
  async release(id: string, why: string): Promise<void> {
    const h = this.held.get(id);
    if (!h) return;
    this.held.delete(id);
    await h
      .close()
      .catch((e: Error) => this.ctx.log.warn({ key: id, err: e.message }, 'could not close the queue worker of a released key'));
    for (const B of h.variants.keys()) await this.ctx.engine.release(h.key, B);
    this.ctx.log.info({ key: id, bytes: h.bytes, lastServedAt: h.lastServedAt }, `key released: ${why}`);
  }

  /** Compiles and warms every variant of a key, then opens its queue. */
  private async hold(id: string, key: CompileKey, model: EngineModel): Promise<void> {
    const { engine, opts } = this.ctx;
    const log = this.ctx.log.child({ key: id });
    const t0 = Date.now();
    const bytes0 = engine.stats().bytes;
    const variants = new Map<number, EngineVariant>();
    try {
      beforeCompile(opts.faults, id);
      for (const B of opts.batchSizes) {
        variants.set(B, await engine.compile(model, key, B));
        afterVariantCompile(opts.faults);
      }
    } catch (e) {
      for (const B of variants.keys())
        await engine
          .release(key, B)
          .catch((err: Error) => log.warn({ B, err: err.message }, 'could not release a variant of a key that failed to compile'));
      throw e;
    }
    const bytes = engine.stats().bytes - bytes0;
    const held = await HeldQueue.open(id, key, this.ctx.keys.queue(key), model, variants, bytes, {
      redis: this.ctx.redis,
      workerId: opts.id,
      lockDurationMs: opts.lockDurationMs,
      stalledIntervalMs: opts.stalledIntervalMs,
      maxStalledCount: opts.maxStalledCount,
      nextToken: this.ctx.nextToken,
      log,
    });
    this.held.set(id, held);
    this.compileSeconds.set(id, (Date.now() - t0) / 1000);
    log.info({ batchSizes: opts.batchSizes, ms: Date.now() - t0, bytes }, 'key warm');
  }

  /** Closes every held key's queue (at stop; the engine disposes the variants). Throws naming the keys that failed. */
  async closeAll(): Promise<void> {
    const failed: string[] = [];
    for (const h of this.held.values()) {
      try {
        await h.close();
      } catch (e) {
        failed.push(`${h.id}: ${(e as Error).message}`);
      }
    }
    this.held.clear();
    if (failed.length) throw new Error(`could not close the queues of ${failed.join('; ')}`);
  }
}
