/**
 * The passes of the autoscaling policy over one plan being built (see policy.ts for the rules they
 * implement, and decide() for their order).
 */
import { assumedFor, type KeyDemand, keepAliveSeconds, holdersFor, keyDemand } from './demand.js';
import type { ClusterState, Plan, PlannedWorker, PolicySettings, WorkerState } from './types.js';

import { type Choice, cmp, definedOnly, EPS, fmt, type HandOver, type Slot, stateRank, unique } from './plan-slots.js';
import { DEFAULT_POLICY_SETTINGS } from './policy-settings.js';

/**
 * One plan being built: the demand of each key, the workers being planned (slots) and what has been
 * decided so far. The passes read and change these; decide() runs them in order.
 */
export class PlanBuilder {
  readonly s: Required<PolicySettings>;
  readonly demand = new Map<string, KeyDemand>();
  /** the workers of the state (sorted by id), then the ones this plan starts */
  readonly slots: Slot[] = [];
  readonly reasons: string[] = [];
  /** lines about what was not done; only the last pass's are kept */
  readonly notes: string[] = [];
  /** decisions made: a pass that makes none ends the passes */
  changes = 0;
  /** worker ids in the state or given out, so that a new worker gets a fresh one */
  private readonly usedIds: Set<string>;
  /** the budget and models of a worker this plan starts */
  private readonly newBudget: number;
  private readonly newModels: ReadonlySet<string>;

  constructor(state: ClusterState, settings: PolicySettings) {
    this.s = { ...DEFAULT_POLICY_SETTINGS, ...definedOnly(settings) };
    const assumed = assumedFor(state.keys, this.s);
    for (const k of [...state.keys].sort((a, b) => cmp(a.key, b.key))) {
      if (!this.demand.has(k.key)) this.demand.set(k.key, keyDemand(k, this.s, assumed));
    }
    const workers = [...state.workers].sort((a, b) => cmp(a.id, b.id));
    this.usedIds = new Set(workers.map((w) => w.id));
    const budgets = workers.map((w) => w.budgetBytes);
    this.newBudget = this.s.newWorkerBudgetBytes ?? (budgets.length > 0 ? Math.max(...budgets) : Number.POSITIVE_INFINITY);
    this.newModels = new Set(state.models);
    for (const w of workers) this.addWorker(w);
  }

  /** A slot for a worker of the state: a stopped one has none, a draining one stops, the others keep the keys they can hold. */
  private addWorker(w: WorkerState): void {
    if (w.state === 'stopped') return;
    const models = new Set(w.models);
    if (w.state === 'draining') {
      this.slots.push({ id: w.id, worker: w, keys: [], models, budget: w.budgetBytes, action: 'stop', added: new Set() });
      this.reasons.push(`stop ${w.id}: draining`);
      return;
    }
    const keys = unique(w.assigned).filter((k) => this.demand.has(k) && models.has(this.demandOf(k).key.model));
    this.slots.push({ id: w.id, worker: w, keys, models, budget: w.budgetBytes, action: 'keep', added: new Set() });
  }

  // --- what the passes look at -----------------------------------------------------------------

  private demandOf(key: string): KeyDemand {
    return this.demand.get(key)!;
  }

  private live(): Slot[] {
    return this.slots.filter((x) => x.action !== 'stop');
  }

  private holders(key: string): Slot[] {
    return this.live().filter((x) => x.keys.includes(key));
  }

  /** the load of key on each of its holders */
  private share(key: string): number {
    return this.demandOf(key).load / Math.max(1, this.holders(key).length);
  }

  private load(x: Slot): number {
    return x.keys.reduce((a, k) => a + this.share(k), 0);
  }

  private sustainedShare(key: string): number {
    return this.demandOf(key).sustained / Math.max(1, this.holders(key).length);
  }

  /** the load of the arrivals alone: what a move is weighed against (backlog is placement's job) */
  private sustained(x: Slot): number {
    return x.keys.reduce((a, k) => a + this.sustainedShare(k), 0);
  }

  private bytes(x: Slot): number {
    return x.keys.reduce((a, k) => a + this.demandOf(k).bytes, 0);
  }

  private hasWork(key: string): boolean {
    return this.demand.get(key)?.work ?? false;
  }

  /** no key with backlog or active jobs, neither planned nor assigned before */
  private drained(x: Slot): boolean {
    return !x.keys.some((k) => this.hasWork(k)) && !(x.worker?.assigned.some((k) => this.hasWork(k)) ?? false);
  }

  private warm(x: Slot, key: string): boolean {
    return x.worker?.held.includes(key) ?? false;
  }

  private canLoad(x: Slot, key: string): boolean {
    return x.action !== 'stop' && !x.keys.includes(key) && x.models.has(this.demandOf(key).key.model);
  }

  /** whether a new worker could hold the key: it loads the key's model, and the key fits its budget */
  private canStart(d: KeyDemand): boolean {
    return this.newModels.has(d.key.model) && d.bytes <= this.newBudget;
  }

  /** Keys to evict from x so that key fits its budget (only keys without work or arrivals), or null. */
  private roomFor(x: Slot, key: string, evict: boolean): string[] | null {
    const need = this.demandOf(key).bytes;
    let free = x.budget - this.bytes(x);
    if (need <= free + EPS) return [];
    if (!evict) return null;
    const out: string[] = [];
    const idle = x.keys.filter((k) => !this.demandOf(k).inUse).sort((a, b) => this.demandOf(b).bytes - this.demandOf(a).bytes || cmp(a, b));
    for (const k of idle) {
      out.push(k);
      free += this.demandOf(k).bytes;
      if (need <= free + EPS) return out;
    }
    return null;
  }

  // --- what the passes change ------------------------------------------------------------------

  private assign(x: Slot, key: string, evicted: string[]): void {
    for (const e of evicted) {
      x.keys = x.keys.filter((k) => k !== e);
      this.reasons.push(`evict ${e} from ${x.id}: no work, room for ${key}`);
    }
    x.keys.push(key);
    x.added.add(key);
    this.changes++;
  }

  /** A worker to start, with the first free id `w-N`; null at the worker limit. */
  private newSlot(): Slot | null {
    if (this.live().length >= this.s.maxWorkers) return null;
    let n = 1;
    while (this.usedIds.has(`w-${n}`)) n++;
    const id = `w-${n}`;
    this.usedIds.add(id);
    const x: Slot = { id, worker: null, keys: [], models: this.newModels, budget: this.newBudget, action: 'start', added: new Set() };
    this.slots.push(x);
    return x;
  }

  // --- the passes ------------------------------------------------------------------------------

  /** Pass 1 (once): which surplus holders give a key up, so that a trickle does not keep every former burst holder busy. */
  releaseSurplus(): void {
    for (const [key, d] of this.demand) {
      if (!d.inUse) continue;
      const keep = Math.max(1, holdersFor(d, this.s.releaseUtilization));
      for (;;) {
        const hs = this.holders(key);
        if (hs.length <= keep) break;
        const x = this.releasable(key, d, hs);
        if (!x) break;
        x.keys = x.keys.filter((k) => k !== key);
        this.reasons.push(
          `release ${key} from ${x.id}: demand ${fmt(d.load)} workers, ${hs.length - 1} warm holders at ≤ ${fmt(this.s.releaseUtilization)} busy`,
        );
      }
    }
  }

  /**
   * The holder that gives key up: the least loaded of those whose copy is warm and whose warm peers
   * would then carry the key at no more than `releaseUtilization`; null when there is none.
   */
  private releasable(key: string, d: KeyDemand, hs: Slot[]): Slot | null {
    const candidates = hs.filter((x) => {
      const rest = hs.filter((y) => y !== x);
      if (!this.warm(x, key) || !rest.every((y) => this.warm(y, key))) return false;
      const restShare = d.load / rest.length;
      return rest.every((y) => this.load(y) - this.share(key) + restShare <= this.s.releaseUtilization + EPS);
    });
    if (candidates.length === 0) return null;
    candidates.sort((a, b) => this.load(a) - this.load(b) || cmp(b.id, a.id));
    return candidates[0];
  }

  /** Pass 2: which workers take the keys that need holders (work and none, or demand above them), most urgent first. */
  place(): void {
    const urgent = [...this.demand.values()].sort(
      (a, b) =>
        Number(b.work) - Number(a.work) ||
        b.key.oldestAgeSeconds - a.key.oldestAgeSeconds ||
        b.key.backlog - a.key.backlog ||
        cmp(a.key.key, b.key.key),
    );
    for (const d of urgent) {
      const current = this.holders(d.key.key).length;
      if (!d.work && current === 0) continue;
      const target = Math.max(current, holdersFor(d));
      for (let h = current; h < target; h++) {
        if (!this.addHolder(d, h, target)) break;
      }
    }
  }

  /** Give the key of d one more holder (it has h of target); false, with a note, when no worker can take it. */
  private addHolder(d: KeyDemand, h: number, target: number): boolean {
    const key = d.key.key;
    const why =
      h === 0
        ? `key ${key} has backlog ${d.key.backlog}${d.key.active > 0 ? `, active ${d.key.active}` : ''}, no holder`
        : `key ${key} needs ${target} holders (demand ${fmt(d.load)} workers), has ${h}`;
    const choice = this.chooseHolder(d, h, d.load / target);
    if (!choice) {
      this.notes.push(`cannot place ${key}: ${why}; no worker can take it (limit ${this.s.maxWorkers})`);
      return false;
    }
    const { slot, how } = choice;
    this.assign(slot, key, this.roomFor(slot, key, d.work) ?? []);
    this.reasons.push(`${slot.action === 'start' ? 'start' : 'assign'} ${key} → ${slot.id} (${how}): ${why}`);
    return true;
  }

  /**
   * Where the key of d is ready soonest: a worker that holds it warm, then one with room (budget, and
   * load below one worker-unit with perHolder added), then a new worker, and for a key with no holder
   * (h 0) the least loaded at the worker limit that can make room. Null when none can take it.
   */
  private chooseHolder(d: KeyDemand, h: number, perHolder: number): Choice | null {
    const key = d.key.key;
    const candidates = this.slots.filter((x) => this.canLoad(x, key));
    const fits = (x: Slot) => this.roomFor(x, key, d.work) !== null && this.load(x) + perHolder <= 1 + EPS;
    const rank = (a: Slot, b: Slot) => this.placementOrder(key, a, b);
    const warmOnes = candidates.filter((x) => this.warm(x, key) && fits(x)).sort(rank);
    if (warmOnes.length > 0) return { slot: warmOnes[0], how: 'holds it warm' };
    const roomy = candidates.filter(fits).sort(rank);
    if (roomy.length > 0) return { slot: roomy[0], how: `has room (load ${fmt(this.load(roomy[0]))})` };
    const started = this.canStart(d) ? this.newSlot() : null;
    if (started) return { slot: started, how: 'new worker' };
    if (h !== 0) return null;
    const any = candidates.filter((x) => this.roomFor(x, key, true) !== null).sort(rank);
    if (any.length === 0) return null;
    return { slot: any[0], how: `least loaded at the worker limit (load ${fmt(this.load(any[0]))})` };
  }

  /** Placement order: room without evicting first, then the least loaded, the readiest, the lowest id. */
  private placementOrder(key: string, a: Slot, b: Slot): number {
    return (
      (this.roomFor(a, key, false) ? 0 : 1) - (this.roomFor(b, key, false) ? 0 : 1) ||
      this.load(a) - this.load(b) ||
      stateRank(a) - stateRank(b) ||
      cmp(a.id, b.id)
    );
  }

  /** Pass 3: which keys spread off workers whose arrivals alone overload them, when a spread pays for its compile. */
  relieve(): void {
    for (let guard = 0; guard < this.demand.size * (this.slots.length + this.s.maxWorkers) + 1; guard++) {
      if (!this.relieveOnce()) break;
    }
  }

  /** One spread, off the most overloaded worker that has a key worth spreading; false when none has. */
  private relieveOnce(): boolean {
    const over = this.live()
      .filter((x) => this.sustained(x) > 1 + EPS)
      .sort((a, b) => this.sustained(b) - this.sustained(a) || cmp(a.id, b.id));
    for (const w of over) {
      const keys = w.keys
        .filter((k) => this.demandOf(k).inUse)
        .sort((a, b) => this.sustainedShare(b) - this.sustainedShare(a) || cmp(a, b));
      for (const key of keys) {
        if (this.spread(w, key)) return true;
      }
    }
    return false;
  }

  /**
   * Give key one more holder, to take load off w, when the load taken off w over `moveHorizonSeconds`
   * is more than `moveGainFactor` times the key's compile seconds; false when it does not pay or no
   * worker can take it.
   */
  private spread(w: Slot, key: string): boolean {
    const d = this.demandOf(key);
    const h = this.holders(key).length;
    const newShare = d.load / (h + 1);
    const gainUnits = Math.min(this.sustained(w) - 1, this.sustainedShare(key) - d.sustained / (h + 1));
    const gain = gainUnits * this.s.moveHorizonSeconds;
    if (gain <= this.s.moveGainFactor * d.compileSeconds) return false;
    const target = this.spreadTarget(key, newShare) ?? (this.canStart(d) ? this.newSlot() : null);
    if (!target) return false;
    const wLoad = this.sustained(w);
    this.assign(target, key, []);
    this.reasons.push(
      `${target.action === 'start' ? 'start' : 'spread'} ${key} → ${target.id}: ${w.id} at load ${fmt(wLoad)}, ` +
        `saves ${fmt(gainUnits)} workers × ${fmt(this.s.moveHorizonSeconds)} s = ${fmt(gain)} s > ${fmt(this.s.moveGainFactor)} × ${fmt(d.compileSeconds)} s compile`,
    );
    return true;
  }

  /** The live worker to spread key to: room in its budget and for newShare of load; warm first, then the least loaded. */
  private spreadTarget(key: string, newShare: number): Slot | null {
    return (
      this.live()
        .filter((x) => this.canLoad(x, key) && this.roomFor(x, key, false) !== null && this.load(x) + newShare <= 1 + EPS)
        .sort((a, b) => Number(this.warm(b, key)) - Number(this.warm(a, key)) || this.load(a) - this.load(b) || cmp(a.id, b.id))[0] ?? null
    );
  }

  /** Pass 4: which lightly loaded workers hand their keys to busier ones, when the worker freed pays for the compiles. */
  consolidate(): void {
    for (let guard = 0; guard < this.slots.length + 1 && this.consolidateOnce(); guard++);
  }

  /**
   * Consolidation: a lightly loaded worker whose keys all fit on busier workers (at no more than
   * `releaseUtilization`, and with no jobs waiting: a worker serves nothing while it compiles)
   * hands them over when the worker-seconds freed over `moveHorizonSeconds`
   * are more than `moveGainFactor` times the compiles. Make before break: the targets compile
   * first, then rule 1 gives the keys up on this worker, which then goes idle and stops.
   */
  private consolidateOnce(): boolean {
    const light = this.live()
      .filter((x) => x.action === 'keep' && x.worker && !x.worker.pending && x.keys.length > 0)
      .sort((a, b) => this.load(a) - this.load(b) || cmp(b.id, a.id));
    for (const w of light) {
      const alone = w.keys.filter((k) => this.holders(k).length === 1);
      // keys with jobs waiting stay with their warm holder; hand-overs happen between bursts
      if (alone.length === 0 || alone.some((k) => this.hasWork(k))) continue;
      const handOver = this.handOver(w, alone);
      if (!handOver || this.s.moveHorizonSeconds <= this.s.moveGainFactor * handOver.cost) continue;
      const wLoad = this.load(w);
      for (const [key, t] of handOver.moves) this.assign(t, key, []);
      this.reasons.push(
        `consolidate ${w.id} (load ${fmt(wLoad)}) → ${handOver.moves.map(([k, t]) => `${k} on ${t.id}`).join(', ')}: ` +
          `frees a worker for ${fmt(this.s.moveHorizonSeconds)} s > ${fmt(this.s.moveGainFactor)} × ${fmt(handOver.cost)} s compile`,
      );
      return true;
    }
    return false;
  }

  /**
   * Where each of w's keys would go: a busier worker without work that has room for it, at no more
   * than `releaseUtilization` with what it is handed, warm first, then the busiest. Null when a key
   * has nowhere to go.
   */
  private handOver(w: Slot, keys: string[]): HandOver | null {
    const moves: [string, Slot][] = [];
    const extra = new Map<Slot, number>();
    const extraBytes = new Map<Slot, number>();
    let cost = 0;
    for (const key of keys) {
      const d = this.demandOf(key);
      const t = this.live()
        .filter(
          (x) =>
            x !== w &&
            !x.keys.some((k) => this.hasWork(k)) &&
            this.canLoad(x, key) &&
            this.busier(x, w) &&
            this.bytes(x) + (extraBytes.get(x) ?? 0) + d.bytes <= x.budget + EPS &&
            this.load(x) + (extra.get(x) ?? 0) + d.load <= this.s.releaseUtilization + EPS,
        )
        .sort((a, b) => Number(this.warm(b, key)) - Number(this.warm(a, key)) || this.load(b) - this.load(a) || cmp(a.id, b.id))[0];
      if (!t) return null;
      moves.push([key, t]);
      extra.set(t, (extra.get(t) ?? 0) + d.load);
      extraBytes.set(t, (extraBytes.get(t) ?? 0) + d.bytes);
      if (!this.warm(t, key)) cost += d.compileSeconds;
    }
    return { moves, cost };
  }

  /** x carries more load than w (on a tie, the lower id counts as busier), so keys flow one way only */
  private busier(x: Slot, w: Slot): boolean {
    return this.load(x) > this.load(w) + EPS || (Math.abs(this.load(x) - this.load(w)) <= EPS && cmp(x.id, w.id) < 0);
  }

  /** Pass 5: which workers start to reach `minWorkers`, and which stop (least needed first) above `maxWorkers`. */
  limits(): void {
    while (this.live().length < this.s.minWorkers) {
      const x = this.newSlot();
      if (!x) break;
      this.reasons.push(`start ${x.id}: ${this.live().length - 1} workers < min ${this.s.minWorkers}`);
    }
    const excess = this.live().length - this.s.maxWorkers;
    if (excess <= 0) return;
    const victims = this.live()
      .filter((x) => x.action === 'keep')
      .sort((a, b) => Number(this.drained(b)) - Number(this.drained(a)) || this.load(a) - this.load(b) || cmp(b.id, a.id))
      .slice(0, excess);
    for (const x of victims) {
      x.action = 'stop';
      this.changes++;
      this.reasons.push(`stop ${x.id}: ${excess + this.s.maxWorkers} workers > max ${this.s.maxWorkers}`);
    }
  }

  /** Pass 6: which idle, drained workers stop, past their keep-alive, most idle first. */
  scaleDown(): void {
    const idle = this.live()
      .filter((x) => x.action === 'keep' && x.worker && !x.worker.pending && x.worker.state === 'idle' && this.drained(x))
      .map((x) => ({
        x,
        ...keepAliveSeconds(
          x.keys.map((k) => this.demandOf(k).compileSeconds),
          this.s,
        ),
      }))
      .sort((a, b) => b.x.worker!.idleSeconds - a.x.worker!.idleSeconds || cmp(a.x.id, b.x.id));
    for (const { x, keepAlive, compile } of idle) {
      const idleS = x.worker!.idleSeconds;
      const why =
        this.s.idleSeconds !== null ? `idle-seconds ${fmt(keepAlive)} s` : `keep-alive ${fmt(keepAlive)} s (compile ${fmt(compile)} s)`;
      if (idleS + EPS < keepAlive) {
        this.notes.push(`keep ${x.id}: idle ${fmt(idleS)} s < ${why}`);
      } else if (this.live().length <= this.s.minWorkers) {
        this.notes.push(`keep ${x.id}: idle ${fmt(idleS)} s ≥ ${why}, but min ${this.s.minWorkers} workers`);
      } else {
        x.action = 'stop';
        this.changes++;
        this.reasons.push(`stop ${x.id}: idle ${fmt(idleS)} s ≥ ${why}`);
      }
    }
  }

  /** The plan: each slot with its keys sorted (none for a stop), then the reasons and the last pass's notes. */
  result(): Plan {
    this.reasons.push(...this.notes);
    const out: PlannedWorker[] = this.slots.map((x) => ({
      id: x.id,
      keys: x.action === 'stop' ? [] : [...x.keys].sort(cmp),
      action: x.action,
    }));
    return { desired_workers: out.filter((w) => w.action !== 'stop').length, workers: out, reasons: this.reasons };
  }
}
