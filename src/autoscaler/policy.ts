/**
 * The autoscaling policy: `decide(state, settings) → Plan`, pure and deterministic (the same state
 * gives the same plan, deep equal). It decides how many workers run and which compile keys each
 * holds, counting a compile as a cost:
 *
 * 1. **Stickiness.** A worker keeps the keys assigned to it while it lives. A key with more than one
 *    holder gives one up only when the others would carry its demand at no more than
 *    `releaseUtilization` of their time; only a warm copy is given up, and only to warm holders.
 * 2. **Placement.** A key with work and no holder, or with fewer holders than its demand
 *    (`keyDemand`: arrivals plus the backlog cleared over the target wait and a compile), gets one
 *    where it is ready soonest: a worker that holds it warm, then a worker with room (memory
 *    budget, and load below one worker-unit), then a new worker (scale up at once), and at the
 *    worker limit the least loaded worker that can hold it.
 * 3. **Moves.** A key is spread off a worker whose arrivals alone overload it only when the load
 *    taken off it over `moveHorizonSeconds` is more than `moveGainFactor` times the key's compile
 *    seconds; a lightly loaded worker hands its keys to busier ones when the worker-seconds that
 *    frees are worth `moveGainFactor` times the compiles. Make before break: the old holder keeps
 *    the key until the new one holds it warm, then rule 1 gives it up.
 * 4. **Scale down.** Only an idle worker whose keys have no backlog and no active jobs stops, after a
 *    keep-alive that grows with what compiling its keys again would cost (`keepAliveSeconds`).
 *    Min and max workers are respected; with `minWorkers` 0 an idle system scales to zero.
 *
 * Hysteresis: the band between adding a holder (demand above the holders) and giving one up (demand
 * below `releaseUtilization` of the rest) and the keep-alive mean that the state a plan leads to
 * gives `keep` for every worker under a steady load.
 */
import { assumedFor, type KeyDemand, keepAliveSeconds, holdersFor, keyDemand } from './demand.js';
import type { ClusterState, Plan, PlannedWorker, PolicySettings, WorkerAction, WorkerState } from './types.js';

/**
 * The defaults, and where each comes from.
 */
export const DEFAULT_POLICY_SETTINGS: Readonly<Required<PolicySettings>> = Object.freeze({
  /** @defaultValue 0: scale to zero when there is no work (DESIGN: `--min-workers 0`) */
  minWorkers: 0,
  /** @defaultValue 8: one wasm worker per core (wasm runs one thread per process) of an 8-core host */
  maxWorkers: 8,
  /**
   * @defaultValue 30 s: two compiles of a GPT-2-small key on wasm (about 15 s each, see
   * `defaultCompileSeconds`): a wait shorter than a compile cannot be met by starting a holder
   */
  targetWaitSeconds: 30,
  /** @defaultValue null: the keep-alive follows the compile cost of the worker's keys */
  idleSeconds: null,
  /**
   * @defaultValue 30 s: six autoscaler intervals of 5 s (`--interval-s`), so a worker is not stopped
   * between two arrivals of a slow trickle; also Knative's scale-to-zero grace period
   */
  minIdleSeconds: 30,
  /** @defaultValue 600 s: twice KEDA's default cooldown (300 s), for keys that take minutes to compile on a GPU */
  maxIdleSeconds: 600,
  /**
   * @defaultValue 4: "clearly more": a move must pay for its compile four times over, since the
   * target serves nothing while it compiles and the load it is weighed against may not last
   */
  moveGainFactor: 4,
  /**
   * @defaultValue 15 s: `npm run bench` measures 3.1 s at B=1 and 4.1 s at B=8 for a GPT-2-small key
   * on wasm; the four sizes 1, 2, 4, 8 add up to about 15 s
   */
  defaultCompileSeconds: 15,
  /**
   * @defaultValue 1 job/s: `npm run bench` measures 40 tokens/s at B=8 for GPT-2 small on wasm, about
   * 1.3 jobs/s of 32 new tokens; rounded down
   */
  defaultServiceRate: 1,
  /** @defaultValue 0.5: give up a holder only when the rest would be at most half busy (HPA-style band) */
  releaseUtilization: 0.5,
  /** @defaultValue 300 s: KEDA's default cooldown, the time a load is assumed to last once seen */
  moveHorizonSeconds: 300,
  /** @defaultValue null: the largest budget among the workers in the state */
  newWorkerBudgetBytes: null,
});

const EPS = 1e-9;

/** A worker being planned: one that exists, or one to start. */
interface Slot {
  id: string;
  worker: WorkerState | null;
  keys: string[];
  models: ReadonlySet<string>;
  budget: number;
  action: WorkerAction;
  /** keys this plan gave it (memory is checked for these) */
  added: Set<string>;
}

const STATE_RANK: Record<string, number> = { idle: 0, busy: 1, warming: 2, starting: 3 };

const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : x.toFixed(x < 10 ? 2 : 1));

/** Decide how many workers run and which keys each holds. */
export function decide(state: ClusterState, settings: PolicySettings): Plan {
  const s: Required<PolicySettings> = { ...DEFAULT_POLICY_SETTINGS, ...definedOnly(settings) };
  const reasons: string[] = [];
  /** lines about what was not done; only the last pass's are kept */
  const notes: string[] = [];
  /** decisions made: a pass that makes none ends the passes */
  let changes = 0;
  const demand = new Map<string, KeyDemand>();
  const assumed = assumedFor(state.keys, s);
  for (const k of [...state.keys].sort((a, b) => cmp(a.key, b.key))) if (!demand.has(k.key)) demand.set(k.key, keyDemand(k, s, assumed));

  const workers = [...state.workers].sort((a, b) => cmp(a.id, b.id));
  const usedIds = new Set(workers.map((w) => w.id));
  const budgets = workers.map((w) => w.budgetBytes);
  const newBudget = s.newWorkerBudgetBytes ?? (budgets.length > 0 ? Math.max(...budgets) : Number.POSITIVE_INFINITY);
  const newModels = new Set(state.models);

  const slots: Slot[] = [];
  for (const w of workers) {
    if (w.state === 'stopped') continue;
    const models = new Set(w.models);
    const keys = unique(w.assigned).filter((k) => demand.has(k) && models.has(demand.get(k)!.key.model));
    if (w.state === 'draining') {
      slots.push({ id: w.id, worker: w, keys: [], models, budget: w.budgetBytes, action: 'stop', added: new Set() });
      reasons.push(`stop ${w.id}: draining`);
      continue;
    }
    slots.push({ id: w.id, worker: w, keys, models, budget: w.budgetBytes, action: 'keep', added: new Set() });
  }

  const live = () => slots.filter((x) => x.action !== 'stop');
  const holders = (key: string) => live().filter((x) => x.keys.includes(key));
  const share = (key: string) => demand.get(key)!.load / Math.max(1, holders(key).length);
  const load = (x: Slot) => x.keys.reduce((a, k) => a + share(k), 0);
  const sustainedShare = (key: string) => demand.get(key)!.sustained / Math.max(1, holders(key).length);
  /** the load of the arrivals alone: what a move is weighed against (backlog is placement's job) */
  const sustained = (x: Slot) => x.keys.reduce((a, k) => a + sustainedShare(k), 0);
  const bytes = (x: Slot) => x.keys.reduce((a, k) => a + demand.get(k)!.bytes, 0);
  const hasWork = (k: string) => demand.get(k)?.work ?? false;
  /** no key with backlog or active jobs, neither planned nor assigned before */
  const drained = (x: Slot) => !x.keys.some(hasWork) && !(x.worker?.assigned.some(hasWork) ?? false);
  const warm = (x: Slot, key: string) => x.worker?.held.includes(key) ?? false;
  const canLoad = (x: Slot, key: string) => x.action !== 'stop' && !x.keys.includes(key) && x.models.has(demand.get(key)!.key.model);
  /** Keys to evict from x so that key fits its budget (only keys without work or arrivals), or null. */
  const roomFor = (x: Slot, key: string, evict: boolean): string[] | null => {
    const need = demand.get(key)!.bytes;
    let free = x.budget - bytes(x);
    if (need <= free + EPS) return [];
    if (!evict) return null;
    const out: string[] = [];
    const idle = x.keys.filter((k) => !demand.get(k)!.inUse).sort((a, b) => demand.get(b)!.bytes - demand.get(a)!.bytes || cmp(a, b));
    for (const k of idle) {
      out.push(k);
      free += demand.get(k)!.bytes;
      if (need <= free + EPS) return out;
    }
    return null;
  };
  const assign = (x: Slot, key: string, evicted: string[]) => {
    for (const e of evicted) {
      x.keys = x.keys.filter((k) => k !== e);
      reasons.push(`evict ${e} from ${x.id}: no work, room for ${key}`);
    }
    x.keys.push(key);
    x.added.add(key);
    changes++;
  };
  const newSlot = (): Slot | null => {
    if (live().length >= s.maxWorkers) return null;
    let n = 1;
    while (usedIds.has(`w-${n}`)) n++;
    const id = `w-${n}`;
    usedIds.add(id);
    const x: Slot = { id, worker: null, keys: [], models: newModels, budget: newBudget, action: 'start', added: new Set() };
    slots.push(x);
    return x;
  };

  // 1. Give up surplus holders (to holders that hold the key warm), so that a trickle does not keep
  //    every former burst holder busy.
  for (const [key, d] of demand) {
    if (!d.inUse) continue;
    const keep = Math.max(1, holdersFor(d, s.releaseUtilization));
    for (;;) {
      const hs = holders(key);
      if (hs.length <= keep) break;
      const candidates = hs.filter((x) => {
        const rest = hs.filter((y) => y !== x);
        if (!warm(x, key) || !rest.every((y) => warm(y, key))) return false;
        const restShare = d.load / rest.length;
        return rest.every((y) => load(y) - share(key) + restShare <= s.releaseUtilization + EPS);
      });
      if (candidates.length === 0) break;
      candidates.sort((a, b) => load(a) - load(b) || cmp(b.id, a.id));
      const x = candidates[0];
      x.keys = x.keys.filter((k) => k !== key);
      reasons.push(
        `release ${key} from ${x.id}: demand ${fmt(d.load)} workers, ${hs.length - 1} warm holders at ≤ ${fmt(s.releaseUtilization)} busy`,
      );
    }
  }

  // 2. Place keys that need holders, most urgent first.
  function place(): void {
    const urgent = [...demand.values()].sort(
      (a, b) =>
        Number(b.work) - Number(a.work) ||
        b.key.oldestAgeSeconds - a.key.oldestAgeSeconds ||
        b.key.backlog - a.key.backlog ||
        cmp(a.key.key, b.key.key),
    );
    for (const d of urgent) {
      const key = d.key.key;
      const current = holders(key).length;
      if (!d.work && current === 0) continue;
      const target = Math.max(current, holdersFor(d));
      for (let h = current; h < target; h++) {
        const perHolder = d.load / target;
        const why =
          h === 0
            ? `key ${key} has backlog ${d.key.backlog}${d.key.active > 0 ? `, active ${d.key.active}` : ''}, no holder`
            : `key ${key} needs ${target} holders (demand ${fmt(d.load)} workers), has ${h}`;
        const candidates = slots.filter((x) => canLoad(x, key));
        const fits = (x: Slot, evict: boolean) => roomFor(x, key, evict && d.work) !== null && load(x) + perHolder <= 1 + EPS;
        const rank = (a: Slot, b: Slot) =>
          (roomFor(a, key, false) ? 0 : 1) - (roomFor(b, key, false) ? 0 : 1) ||
          load(a) - load(b) ||
          (a.worker ? (STATE_RANK[a.worker.state] ?? 4) : 5) - (b.worker ? (STATE_RANK[b.worker.state] ?? 4) : 5) ||
          cmp(a.id, b.id);
        const warmOnes = candidates.filter((x) => warm(x, key) && fits(x, true)).sort(rank);
        const roomy = candidates.filter((x) => fits(x, true)).sort(rank);
        let chosen: Slot | null = null;
        let how = '';
        if (warmOnes.length > 0) {
          chosen = warmOnes[0];
          how = 'holds it warm';
        } else if (roomy.length > 0) {
          chosen = roomy[0];
          how = `has room (load ${fmt(load(chosen))})`;
        } else if (newModels.has(d.key.model) && d.bytes <= newBudget && (chosen = newSlot())) {
          how = 'new worker';
        } else if (h === 0) {
          const any = candidates.filter((x) => roomFor(x, key, true) !== null).sort(rank);
          if (any.length > 0) {
            chosen = any[0];
            how = `least loaded at the worker limit (load ${fmt(load(chosen))})`;
          }
        }
        if (!chosen) {
          notes.push(`cannot place ${key}: ${why}; no worker can take it (limit ${s.maxWorkers})`);
          break;
        }
        assign(chosen, key, roomFor(chosen, key, d.work) ?? []);
        reasons.push(`${chosen.action === 'start' ? 'start' : 'assign'} ${key} → ${chosen.id} (${how}): ${why}`);
      }
    }
  }

  // 3. Relieve overloaded workers by spreading a key, when that pays for its compile.
  function relieve(): void {
    for (let guard = 0; guard < demand.size * (slots.length + s.maxWorkers) + 1; guard++) {
      if (!relieveOnce()) break;
    }
  }
  function relieveOnce(): boolean {
    const over = live()
      .filter((x) => sustained(x) > 1 + EPS)
      .sort((a, b) => sustained(b) - sustained(a) || cmp(a.id, b.id));
    for (const w of over) {
      const keys = w.keys.filter((k) => demand.get(k)!.inUse).sort((a, b) => sustainedShare(b) - sustainedShare(a) || cmp(a, b));
      for (const key of keys) {
        const d = demand.get(key)!;
        const h = holders(key).length;
        const newShare = d.load / (h + 1);
        const gainUnits = Math.min(sustained(w) - 1, sustainedShare(key) - d.sustained / (h + 1));
        const gain = gainUnits * s.moveHorizonSeconds;
        if (gain <= s.moveGainFactor * d.compileSeconds) continue;
        let target: Slot | null =
          live()
            .filter((x) => canLoad(x, key) && roomFor(x, key, false) !== null && load(x) + newShare <= 1 + EPS)
            .sort((a, b) => Number(warm(b, key)) - Number(warm(a, key)) || load(a) - load(b) || cmp(a.id, b.id))[0] ?? null;
        if (!target && newModels.has(d.key.model) && d.bytes <= newBudget) target = newSlot();
        if (!target) continue;
        const wLoad = sustained(w);
        assign(target, key, []);
        reasons.push(
          `${target.action === 'start' ? 'start' : 'spread'} ${key} → ${target.id}: ${w.id} at load ${fmt(wLoad)}, ` +
            `saves ${fmt(gainUnits)} workers × ${fmt(s.moveHorizonSeconds)} s = ${fmt(gain)} s > ${fmt(s.moveGainFactor)} × ${fmt(d.compileSeconds)} s compile`,
        );
        return true;
      }
    }
    return false;
  }

  /**
   * Consolidation: a lightly loaded worker whose keys all fit on busier workers (at no more than
   * `releaseUtilization`, and with no jobs waiting: a worker serves nothing while it compiles)
   * hands them over when the worker-seconds freed over `moveHorizonSeconds`
   * are more than `moveGainFactor` times the compiles. Make before break: the targets compile
   * first, then rule 1 gives the keys up on this worker, which then goes idle and stops.
   */
  function consolidateOnce(): boolean {
    const light = live()
      .filter((x) => x.action === 'keep' && x.worker && !x.worker.pending && x.keys.length > 0)
      .sort((a, b) => load(a) - load(b) || cmp(b.id, a.id));
    for (const w of light) {
      const alone = w.keys.filter((k) => holders(k).length === 1);
      // keys with jobs waiting stay with their warm holder; hand-overs happen between bursts
      if (alone.length === 0 || alone.some(hasWork)) continue;
      const plan: [string, Slot][] = [];
      const extra = new Map<Slot, number>();
      const extraBytes = new Map<Slot, number>();
      let cost = 0;
      for (const key of alone) {
        const d = demand.get(key)!;
        const t = live()
          .filter(
            (x) =>
              x !== w &&
              !x.keys.some(hasWork) &&
              canLoad(x, key) &&
              (load(x) > load(w) + EPS || (Math.abs(load(x) - load(w)) <= EPS && cmp(x.id, w.id) < 0)) &&
              bytes(x) + (extraBytes.get(x) ?? 0) + d.bytes <= x.budget + EPS &&
              load(x) + (extra.get(x) ?? 0) + d.load <= s.releaseUtilization + EPS,
          )
          .sort((a, b) => Number(warm(b, key)) - Number(warm(a, key)) || load(b) - load(a) || cmp(a.id, b.id))[0];
        if (!t) break;
        plan.push([key, t]);
        extra.set(t, (extra.get(t) ?? 0) + d.load);
        extraBytes.set(t, (extraBytes.get(t) ?? 0) + d.bytes);
        if (!warm(t, key)) cost += d.compileSeconds;
      }
      if (plan.length < alone.length) continue;
      if (s.moveHorizonSeconds <= s.moveGainFactor * cost) continue;
      const wLoad = load(w);
      for (const [key, t] of plan) assign(t, key, []);
      reasons.push(
        `consolidate ${w.id} (load ${fmt(wLoad)}) → ${plan.map(([k, t]) => `${k} on ${t.id}`).join(', ')}: ` +
          `frees a worker for ${fmt(s.moveHorizonSeconds)} s > ${fmt(s.moveGainFactor)} × ${fmt(cost)} s compile`,
      );
      return true;
    }
    return false;
  }

  // 4. Respect the limits.
  function limits(): void {
    while (live().length < s.minWorkers) {
      const x = newSlot();
      if (!x) break;
      reasons.push(`start ${x.id}: ${live().length - 1} workers < min ${s.minWorkers}`);
    }
    const excess = live().length - s.maxWorkers;
    if (excess > 0) {
      const victims = live()
        .filter((x) => x.action === 'keep')
        .sort((a, b) => Number(drained(b)) - Number(drained(a)) || load(a) - load(b) || cmp(b.id, a.id))
        .slice(0, excess);
      for (const x of victims) {
        x.action = 'stop';
        changes++;
        reasons.push(`stop ${x.id}: ${excess + s.maxWorkers} workers > max ${s.maxWorkers}`);
      }
    }
  }

  // 5. Scale down: idle, drained workers past their keep-alive, most idle first.
  function scaleDown(): void {
    const idle = live()
      .filter((x) => x.action === 'keep' && x.worker && !x.worker.pending && x.worker.state === 'idle' && drained(x))
      .map((x) => ({
        x,
        ...keepAliveSeconds(
          x.keys.map((k) => demand.get(k)!.compileSeconds),
          s,
        ),
      }))
      .sort((a, b) => b.x.worker!.idleSeconds - a.x.worker!.idleSeconds || cmp(a.x.id, b.x.id));
    for (const { x, keepAlive, compile } of idle) {
      const idleS = x.worker!.idleSeconds;
      const why =
        s.idleSeconds !== null ? `idle-seconds ${fmt(keepAlive)} s` : `keep-alive ${fmt(keepAlive)} s (compile ${fmt(compile)} s)`;
      if (idleS + EPS < keepAlive) {
        notes.push(`keep ${x.id}: idle ${fmt(idleS)} s < ${why}`);
      } else if (live().length <= s.minWorkers) {
        notes.push(`keep ${x.id}: idle ${fmt(idleS)} s ≥ ${why}, but min ${s.minWorkers} workers`);
      } else {
        x.action = 'stop';
        changes++;
        reasons.push(`stop ${x.id}: idle ${fmt(idleS)} s ≥ ${why}`);
      }
    }
  }

  // A stop can free a place under the worker limit for a key that found none: run again until
  // nothing changes (at most a few passes; each pass only adds holders or stops workers).
  for (let pass = 0; pass < 4; pass++) {
    const before = changes;
    notes.length = 0;
    place();
    relieve();
    for (let guard = 0; guard < slots.length + 1 && consolidateOnce(); guard++);
    limits();
    scaleDown();
    if (changes === before) break;
  }
  reasons.push(...notes);

  const out: PlannedWorker[] = slots.map((x) => ({
    id: x.id,
    keys: x.action === 'stop' ? [] : [...x.keys].sort(cmp),
    action: x.action,
  }));
  return { desired_workers: out.filter((w) => w.action !== 'stop').length, workers: out, reasons };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function unique(xs: string[]): string[] {
  return [...new Set(xs)];
}

function definedOnly(o: PolicySettings): Partial<PolicySettings> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<PolicySettings>;
}
