/** The autoscaling policy: pure decisions over a cluster state, no Redis. */
import { mulberry32 } from '../../src/shared/rng.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide } from '../../src/autoscaler/policy.js';
import { DEFAULT_POLICY_SETTINGS } from '../../src/autoscaler/policy-settings.js';
import { assumedFor, keepAliveSeconds, keyDemand } from '../../src/autoscaler/demand.js';
import type { ClusterState, KeyState, Plan, PolicySettings, WorkerState } from '../../src/autoscaler/types.js';

const S: PolicySettings = { ...DEFAULT_POLICY_SETTINGS, maxWorkers: 8 };
const settings = (o: Partial<PolicySettings> = {}): PolicySettings => ({ ...S, ...o });

function key(name: string, o: Partial<KeyState> = {}): KeyState {
  return {
    key: `m:${name}`,
    model: 'm',
    backlog: 0,
    active: 0,
    arrivalRate: 0,
    serviceRate: 1,
    compileSeconds: 20,
    bytes: 10,
    oldestAgeSeconds: 0,
    ...o,
  };
}

function worker(id: string, o: Partial<WorkerState> = {}): WorkerState {
  const assigned = o.assigned ?? [];
  return {
    id,
    assigned,
    held: assigned,
    state: 'busy',
    models: ['m'],
    budgetBytes: 100,
    usedBytes: 0,
    idleSeconds: 0,
    ageSeconds: 100,
    ...o,
  };
}

const cluster = (keys: KeyState[], workers: WorkerState[] = []): ClusterState => ({ now: 1000, keys, workers, models: ['m'] });
const byId = (p: Plan, id: string) => p.workers.find((w) => w.id === id)!;
const starts = (p: Plan) => p.workers.filter((w) => w.action === 'start');
const holdersOf = (p: Plan, k: string) => p.workers.filter((w) => w.action !== 'stop' && w.keys.includes(k)).map((w) => w.id);

/** The state a plan leads to: stopped workers gone, started ones pending with their keys, keys as planned. */
function apply(state: ClusterState, plan: Plan, s: PolicySettings): ClusterState {
  const budgets = state.workers.map((w) => w.budgetBytes);
  const budget = s.newWorkerBudgetBytes ?? (budgets.length ? Math.max(...budgets) : Number.POSITIVE_INFINITY);
  const workers: WorkerState[] = [];
  for (const p of plan.workers) {
    const w = state.workers.find((x) => x.id === p.id);
    if (p.action === 'stop') continue;
    if (p.action === 'start') {
      workers.push({
        id: p.id,
        assigned: p.keys,
        held: [],
        state: 'starting',
        models: state.models,
        budgetBytes: budget,
        usedBytes: 0,
        idleSeconds: 0,
        ageSeconds: 0,
        pending: true,
      });
    } else workers.push({ ...w!, assigned: p.keys });
  }
  return { ...state, workers };
}

// --- demand -------------------------------------------------------------------------------------

test('demand: (arrivals + backlog / target wait) / service rate workers; an empty cluster starts them all at once', () => {
  // 2 jobs/s + 60 waiting / 30 s = 4 jobs/s at 1 job/s per worker: 4 workers
  const p = decide(cluster([key('a', { arrivalRate: 2, backlog: 60 })]), settings());
  assert.equal(p.desired_workers, 4);
  assert.deepEqual(
    starts(p).map((w) => w.id),
    ['w-1', 'w-2', 'w-3', 'w-4'],
  );
  for (const w of starts(p)) assert.deepEqual(w.keys, ['m:a']);
  // the same key served twice as fast needs half
  const q = decide(cluster([key('a', { arrivalRate: 2, backlog: 60, serviceRate: 2 })]), settings());
  assert.equal(q.desired_workers, 2);
});

test('demand: an unmeasured key uses the default service rate and compile seconds', () => {
  const d = keyDemand(key('a', { serviceRate: null, compileSeconds: null, arrivalRate: 3 }), settings({ defaultServiceRate: 1.5 }));
  assert.equal(d.load, 2);
  assert.equal(d.compileSeconds, S.defaultCompileSeconds);
  const p = decide(cluster([key('a', { serviceRate: null, arrivalRate: 3, backlog: 1 })]), settings({ defaultServiceRate: 1.5 }));
  // 3 + 1/30 jobs/s at 1.5 jobs/s: just over 2 workers
  assert.equal(p.desired_workers, 3);
});

test('demand: an unmeasured key is assumed to cost what the measured keys cost (their median)', () => {
  const keys = [
    key('u', { serviceRate: null, compileSeconds: null }),
    key('x', { serviceRate: 3, compileSeconds: 50 }),
    key('y', { serviceRate: 5, compileSeconds: 70 }),
  ];
  const d = keyDemand(keys[0], settings(), assumedFor(keys, settings()));
  assert.equal(d.serviceRate, 4);
  assert.equal(d.compileSeconds, 60);
});

test('demand: small keys share a worker; keys that together exceed one worker get another', () => {
  const small = decide(cluster([key('a', { backlog: 3 }), key('b', { backlog: 3 }), key('c', { backlog: 3 })]), settings());
  assert.equal(small.desired_workers, 1);
  assert.deepEqual(byId(small, 'w-1').keys, ['m:a', 'm:b', 'm:c']);
  const big = decide(
    cluster([key('a', { arrivalRate: 0.8 }), key('b', { arrivalRate: 0.8, backlog: 1 }), key('c', { backlog: 24 })]),
    settings(),
  );
  assert.equal(big.desired_workers, 2);
});

// --- a key with work always has a holder --------------------------------------------------------

test('a key with backlog gets a holder; at the worker limit it goes to the least loaded worker', () => {
  const w1 = worker('w-1', { assigned: ['m:a'] });
  const w2 = worker('w-2', { assigned: ['m:b'] });
  // w-1 at 1.0 workers, w-2 at 0.54: c (30 / 50 s = 0.6 workers) fits on neither
  const state = cluster(
    [key('a', { arrivalRate: 0.9, backlog: 5 }), key('b', { arrivalRate: 0.5, backlog: 2 }), key('c', { backlog: 30 })],
    [w1, w2],
  );
  const p = decide(state, settings({ maxWorkers: 2 }));
  assert.equal(p.desired_workers, 2);
  assert.deepEqual(holdersOf(p, 'm:c'), ['w-2']);
  // with room for a third worker, a new one takes it instead
  const q = decide(state, settings({ maxWorkers: 3 }));
  assert.deepEqual(holdersOf(q, 'm:c'), ['w-3']);
});

test('active jobs alone need a holder too', () => {
  const p = decide(cluster([key('a', { active: 2 })]), settings());
  assert.deepEqual(holdersOf(p, 'm:a'), ['w-1']);
});

test('no worker is idle while a key with work has no holder: the idle one takes it, evicting an idle key for room', () => {
  const idle = worker('w-1', { assigned: ['m:old'], state: 'idle', idleSeconds: 5, budgetBytes: 50 });
  const state = cluster([key('old', { bytes: 40 }), key('new', { backlog: 3, bytes: 30 })], [idle]);
  const p = decide(state, settings());
  assert.deepEqual(p.workers, [{ id: 'w-1', keys: ['m:new'], action: 'keep' }]);
  assert.ok(p.reasons.some((r) => r.startsWith('evict m:old from w-1')));
});

// --- scale up at once, scale down after a compile-sized keep-alive --------------------------------

test('scale up at once: every key with work gets its holders in one plan', () => {
  const keys = ['a', 'b', 'c'].map((n) => key(n, { backlog: 40 })); // 0.8 workers each
  const p = decide(cluster(keys), settings());
  assert.equal(p.desired_workers, 3);
  assert.deepEqual(
    p.workers.map((w) => [w.id, w.keys, w.action]),
    [
      ['w-1', ['m:a'], 'start'],
      ['w-2', ['m:b'], 'start'],
      ['w-3', ['m:c'], 'start'],
    ],
  );
});

test('keep-alive: the sum of the keys compile seconds, clamped, or idleSeconds when set', () => {
  assert.deepEqual(keepAliveSeconds([20, 40], settings()), { keepAlive: 60, compile: 60 });
  assert.equal(keepAliveSeconds([5], settings()).keepAlive, S.minIdleSeconds);
  assert.equal(keepAliveSeconds([2000], settings()).keepAlive, S.maxIdleSeconds);
  assert.equal(keepAliveSeconds([2000], settings({ idleSeconds: 10 })).keepAlive, 10);
});

test('scale down: an idle, drained worker stops only once idle for its keep-alive', () => {
  const keys = [key('a', { compileSeconds: 20 }), key('b', { compileSeconds: 40 })];
  const at = (idleSeconds: number, o: Partial<PolicySettings> = {}) =>
    decide(cluster(keys, [worker('w-1', { assigned: ['m:a', 'm:b'], state: 'idle', idleSeconds })]), settings(o));
  assert.equal(byId(at(59), 'w-1').action, 'keep');
  assert.ok(at(59).reasons.includes('keep w-1: idle 59 s < keep-alive 60 s (compile 60 s)'));
  const p = at(60);
  assert.equal(byId(p, 'w-1').action, 'stop');
  assert.equal(p.desired_workers, 0);
  assert.ok(p.reasons.includes('stop w-1: idle 60 s ≥ keep-alive 60 s (compile 60 s)'));
  // a fixed idle time overrides the compile-sized keep-alive
  assert.equal(byId(at(11, { idleSeconds: 10 }), 'w-1').action, 'stop');
  // a worker holding costlier keys waits longer
  const costly = [key('a', { compileSeconds: 200 })];
  const q = decide(cluster(costly, [worker('w-1', { assigned: ['m:a'], state: 'idle', idleSeconds: 120 })]), settings());
  assert.equal(byId(q, 'w-1').action, 'keep');
});

test('scale down never stops a busy worker, nor an idle one whose key has backlog or active jobs', () => {
  const keys = [key('a', { backlog: 3 }), key('b', { active: 1 }), key('c')];
  const state = cluster(keys, [
    worker('w-1', { assigned: ['m:a'], state: 'idle', idleSeconds: 9999 }),
    worker('w-2', { assigned: ['m:b'], state: 'idle', idleSeconds: 9999 }),
    worker('w-3', { assigned: ['m:c'], state: 'busy', idleSeconds: 9999 }),
  ]);
  const p = decide(state, settings({ idleSeconds: 1 }));
  assert.deepEqual(
    p.workers.map((w) => w.action),
    ['keep', 'keep', 'keep'],
  );
});

test('scale to zero with minWorkers 0; minWorkers keeps the most recently used ones', () => {
  const keys = [key('a')];
  const state = cluster(keys, [
    worker('w-1', { assigned: ['m:a'], state: 'idle', idleSeconds: 700 }),
    worker('w-2', { assigned: [], state: 'idle', idleSeconds: 400 }),
  ]);
  assert.equal(decide(state, settings()).desired_workers, 0);
  const p = decide(state, settings({ minWorkers: 1 }));
  assert.equal(p.desired_workers, 1);
  assert.equal(byId(p, 'w-1').action, 'stop');
  assert.equal(byId(p, 'w-2').action, 'keep');
  // and an empty cluster under a minimum starts workers
  assert.equal(starts(decide(cluster([]), settings({ minWorkers: 2 }))).length, 2);
});

// --- keys stay where they are warm --------------------------------------------------------------

test('stickiness: a key stays on the worker that holds it even when another is idle', () => {
  const state = cluster(
    [key('a', { arrivalRate: 0.5, backlog: 3 })],
    [worker('w-1', { assigned: ['m:a'] }), worker('w-2', { assigned: [], state: 'idle', idleSeconds: 1 })],
  );
  const p = decide(state, settings());
  assert.deepEqual(holdersOf(p, 'm:a'), ['w-1']);
});

test('backlog is cleared over the target wait plus a compile: a key slow to compile gets fewer new holders', () => {
  const mk = (compileSeconds: number) =>
    decide(cluster([key('a', { backlog: 100, compileSeconds })], [worker('w-1', { assigned: ['m:a'] })]), settings());
  assert.equal(mk(20).desired_workers, 2); // 100 / (30 + 20) s = 2 jobs/s
  assert.equal(mk(70).desired_workers, 1); // 100 / (30 + 70) s = 1 job/s
  assert.equal(keyDemand(key('a', { backlog: 100, arrivalRate: 0.5, compileSeconds: 70 }), settings()).load, 1.5);
});

test('moves: a key is spread off an overloaded worker only when the gain is clearly more than its compile', () => {
  // w-1 holds two keys of 0.8 workers each (load 1.6); w-2 has room
  const mk = (compileSeconds: number) =>
    decide(
      cluster(
        [key('a', { arrivalRate: 0.8, compileSeconds }), key('b', { arrivalRate: 0.8, compileSeconds })],
        [worker('w-1', { assigned: ['m:a', 'm:b'] }), worker('w-2', { assigned: [], state: 'idle', idleSeconds: 1 })],
      ),
      settings(),
    );
  // gain: min(0.6, 0.8 - 0.4) = 0.4 workers × 300 s = 120 s; pays for a 25 s compile four times, not a 35 s one
  const cheap = mk(25);
  assert.deepEqual(holdersOf(cheap, 'm:a'), ['w-1', 'w-2']);
  assert.deepEqual(holdersOf(cheap, 'm:b'), ['w-1']);
  assert.ok(cheap.reasons.some((r) => r.startsWith('spread m:a → w-2: w-1 at load 1.60')));
  const dear = mk(35);
  assert.deepEqual(holdersOf(dear, 'm:a'), ['w-1']);
  assert.deepEqual(holdersOf(dear, 'm:b'), ['w-1']);
});

test('make before break: a surplus holder is given up only to holders that hold the key warm', () => {
  const keys = [key('a', { arrivalRate: 0.2 })];
  const mk = (held1: string[], held2: string[]) =>
    holdersOf(
      decide(
        cluster(keys, [worker('w-1', { assigned: ['m:a'], held: held1 }), worker('w-2', { assigned: ['m:a'], held: held2 })]),
        settings(),
      ),
      'm:a',
    );
  assert.equal(mk(['m:a'], ['m:a']).length, 1); // both warm: one goes
  // while either is still compiling it, both stay: a cold copy is not given up, nor a warm one to a cold one
  assert.deepEqual(mk([], ['m:a']), ['w-1', 'w-2']);
  assert.deepEqual(mk(['m:a'], []), ['w-1', 'w-2']);
  assert.deepEqual(mk([], []), ['w-1', 'w-2']);
});

test('consolidation: a light worker hands its keys to a busier one when the freed worker-seconds pay for the compiles', () => {
  const mk = (compileSeconds: number) =>
    cluster(
      [key('a', { arrivalRate: 0.1, compileSeconds }), key('b', { arrivalRate: 0.2, compileSeconds })],
      [worker('w-1', { assigned: ['m:a'] }), worker('w-2', { assigned: ['m:b'] })],
    );
  // 300 s of a worker freed > 4 × 20 s compile: a goes to w-2 as well (w-2 compiles it first)
  const p = decide(mk(20), settings());
  assert.deepEqual(holdersOf(p, 'm:a'), ['w-1', 'w-2']);
  assert.ok(p.reasons.some((r) => r.startsWith('consolidate w-1 (load 0.10) → m:a on w-2')));
  // once w-2 holds it warm, w-1 gives it up and has nothing left
  const next = decide(
    { ...mk(20), workers: [worker('w-1', { assigned: ['m:a'] }), worker('w-2', { assigned: ['m:a', 'm:b'] })] },
    settings(),
  );
  assert.deepEqual(byId(next, 'w-1').keys, []);
  // 300 s < 4 × 100 s compile: not worth it
  assert.deepEqual(holdersOf(decide(mk(100), settings()), 'm:a'), ['w-1']);
});

test('after a burst, surplus holders give the key up so that they can go idle', () => {
  const ws = ['w-1', 'w-2', 'w-3'].map((id) => worker(id, { assigned: ['m:a'] }));
  // 0.4 jobs/s at 1 job/s: one holder at 40% busy is enough
  const p = decide(cluster([key('a', { arrivalRate: 0.4 })], ws), settings());
  assert.deepEqual(holdersOf(p, 'm:a'), ['w-1']);
  assert.equal(p.reasons.filter((r) => r.startsWith('release m:a')).length, 2);
  // at 0.9 jobs/s, two holders would be 45% busy each: keep two
  assert.equal(holdersOf(decide(cluster([key('a', { arrivalRate: 0.9 })], ws), settings()), 'm:a').length, 2);
});

test('new keys go where they are ready soonest: warm, then a worker with room, then a new worker', () => {
  const keys = [key('a', { arrivalRate: 0.3 }), key('n', { backlog: 3, bytes: 30 })];
  const warm = worker('w-2', { assigned: [], held: ['m:n'], state: 'idle', idleSeconds: 1 });
  const roomy = worker('w-1', { assigned: ['m:a'] });
  assert.deepEqual(holdersOf(decide(cluster(keys, [roomy, warm]), settings()), 'm:n'), ['w-2']);
  assert.deepEqual(holdersOf(decide(cluster(keys, [roomy]), settings()), 'm:n'), ['w-1']);
  // no memory room on w-1 (10 + 30 > 35) and its key is in use: a new worker
  const full = worker('w-1', { assigned: ['m:a'], budgetBytes: 35 });
  assert.deepEqual(holdersOf(decide(cluster(keys, [full]), settings()), 'm:n'), ['w-2']);
});

test('a key goes only to a worker that has its model', () => {
  const other = worker('w-1', { models: ['x'], state: 'idle', idleSeconds: 1 });
  const p = decide(cluster([key('a', { backlog: 2 })], [other]), settings());
  assert.deepEqual(holdersOf(p, 'm:a'), ['w-2']);
});

test('new ids are the smallest w-<n> no worker uses; max workers is respected', () => {
  const state = cluster(
    [key('a', { backlog: 300 })],
    [worker('w-1', { assigned: ['m:a'] }), worker('w-3', { assigned: ['m:a'] }), worker('w-4', { state: 'stopped' })],
  );
  const p = decide(state, settings({ maxWorkers: 5 }));
  assert.deepEqual(
    starts(p).map((w) => w.id),
    ['w-2', 'w-5', 'w-6'],
  );
  assert.equal(p.desired_workers, 5);
  assert.ok(p.reasons.some((r) => r.startsWith('cannot place m:a')));
});

test('hysteresis: under a steady load the state a plan leads to gives keep for everyone', () => {
  const keys = [key('a', { arrivalRate: 2.5, backlog: 10 }), key('b', { arrivalRate: 0.3, backlog: 1 }), key('c', { backlog: 12 })];
  const s = settings();
  const state = cluster(keys, [worker('w-1', { assigned: ['m:a'] }), worker('w-2', { assigned: ['m:z'], state: 'idle', idleSeconds: 3 })]);
  const p1 = decide(state, s);
  assert.ok(starts(p1).length > 0);
  const p2 = decide(apply(state, p1, s), s);
  assert.ok(p2.workers.every((w) => w.action === 'keep'));
  assert.deepEqual(
    p2.workers.map((w) => [w.id, w.keys]),
    p1.workers.filter((w) => w.action !== 'stop').map((w) => [w.id, w.keys]),
  );
});

// --- properties over random states --------------------------------------------------------------

function randomCase(seed: number): { state: ClusterState; settings: PolicySettings } {
  const r = mulberry32(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const models = ['a', 'b'];
  const keys: KeyState[] = Array.from({ length: int(1, 14) }, (_, i) => {
    const model = pick(models);
    const backlog = r() < 0.5 ? 0 : int(1, 120);
    return {
      key: `${model}:p${16 << (i % 3)}:n${16 << (i % 2)}:k${i}`,
      model,
      backlog,
      active: r() < 0.7 ? 0 : int(1, 4),
      arrivalRate: r() < 0.4 ? 0 : +(r() * 3).toFixed(2),
      serviceRate: r() < 0.2 ? null : +(0.3 + r() * 4).toFixed(2),
      compileSeconds: r() < 0.2 ? null : int(1, 200),
      bytes: r() < 0.2 ? null : int(1, 40),
      oldestAgeSeconds: backlog > 0 ? int(0, 300) : 0,
    };
  });
  const maxWorkers = int(1, 9);
  const minWorkers = int(0, Math.min(2, maxWorkers));
  const states: WorkerState['state'][] = ['starting', 'warming', 'idle', 'busy', 'busy', 'idle', 'draining', 'stopped'];
  const workers: WorkerState[] = [];
  let live = 0;
  for (let i = 0; i < int(0, 9); i++) {
    let state = pick(states);
    if (state !== 'draining' && state !== 'stopped') {
      if (live >= maxWorkers) state = 'stopped';
      else live++;
    }
    const wm = r() < 0.7 ? models : [pick(models)];
    const mine = keys.filter((k) => wm.includes(k.model) && r() < 0.3).map((k) => k.key);
    workers.push({
      id: `w-${int(1, 12)}-${i}`.replace(/-\d+$/, r() < 0.5 ? '' : `-${i}`),
      assigned: mine,
      held: mine.filter(() => r() < 0.7).concat(keys.filter(() => r() < 0.1).map((k) => k.key)),
      state,
      models: wm,
      budgetBytes: int(60, 200),
      usedBytes: int(0, 60),
      idleSeconds: state === 'idle' ? int(0, 900) : 0,
      ageSeconds: int(0, 5000),
      pending: state === 'starting' && r() < 0.5,
    });
  }
  // ids are unique in a real cluster
  const seen = new Set<string>();
  const unique = workers.filter((w) => !seen.has(w.id) && seen.add(w.id));
  return {
    state: { now: 1, keys, workers: unique, models },
    settings: settings({
      minWorkers,
      maxWorkers,
      targetWaitSeconds: pick([10, 30, 60]),
      idleSeconds: r() < 0.3 ? int(1, 120) : null,
      moveGainFactor: pick([1, 2, 4]),
    }),
  };
}

const CASES = 400;

test(`properties over ${CASES} random states`, () => {
  for (let seed = 1; seed <= CASES; seed++) {
    const { state, settings: s } = randomCase(seed);
    const p = decide(state, s);
    const where = `seed ${seed}`;
    const keys = new Map(state.keys.map((k) => [k.key, k]));
    const work = (k: string) => keys.get(k)!.backlog > 0 || keys.get(k)!.active > 0;
    const live = p.workers.filter((w) => w.action !== 'stop');

    // same input, same plan
    assert.deepEqual(decide(structuredClone(state), { ...s }), p, where);
    // limits
    assert.equal(p.desired_workers, live.length, where);
    assert.ok(p.desired_workers <= s.maxWorkers, `${where}: above max`);
    assert.ok(p.desired_workers >= s.minWorkers, `${where}: below min`);
    // every stop is of an idle, drained worker (or one already draining); every planned worker exists or starts
    for (const w of p.workers) {
      const before = state.workers.find((x) => x.id === w.id);
      if (w.action === 'start') assert.equal(before, undefined, `${where}: start of an existing id ${w.id}`);
      else assert.ok(before && before.state !== 'stopped', `${where}: ${w.id} not live`);
      if (w.action === 'stop' && before!.state !== 'draining') {
        assert.equal(before!.state, 'idle', `${where}: stopped a ${before!.state} worker ${w.id}`);
        assert.ok(!before!.assigned.some(work), `${where}: stopped ${w.id} holding a key with work`);
      }
      const models = before ? before.models : state.models;
      for (const k of w.keys) {
        assert.ok(keys.has(k), `${where}: unknown key ${k}`);
        assert.ok(models.includes(keys.get(k)!.model), `${where}: ${k} on ${w.id} without its model`);
      }
      assert.equal(new Set(w.keys).size, w.keys.length, `${where}: duplicate key on ${w.id}`);
      // memory: a worker given a key has room for all it holds
      const added = w.keys.filter((k) => !before?.assigned.includes(k));
      if (added.length > 0) {
        const budgets = state.workers.map((x) => x.budgetBytes);
        const budget = before ? before.budgetBytes : budgets.length ? Math.max(...budgets) : Number.POSITIVE_INFINITY;
        const used = w.keys.reduce((a, k) => a + (keys.get(k)!.bytes ?? 0), 0);
        assert.ok(used <= budget, `${where}: ${w.id} over budget ${used} > ${budget}`);
      }
    }
    // keys with work are held when the limit allows; no worker idle while one is unheld
    for (const k of state.keys) {
      if (!work(k.key) || live.some((w) => w.keys.includes(k.key))) continue;
      assert.ok(p.desired_workers >= s.maxWorkers, `${where}: ${k.key} has work and no holder at ${p.desired_workers} < ${s.maxWorkers}`);
      for (const w of live) {
        const before = state.workers.find((x) => x.id === w.id);
        const idleNow = w.keys.every((x) => !work(x));
        const models = before ? before.models : state.models;
        const budget = before?.budgetBytes ?? Number.POSITIVE_INFINITY;
        const fits = w.keys.filter(work).reduce((a, x) => a + (keys.get(x)!.bytes ?? 0), 0) + (k.bytes ?? 0) <= budget;
        const evictable = w.keys.every((x) => keys.get(x)!.arrivalRate === 0);
        assert.ok(!(idleNow && evictable && fits && models.includes(k.model)), `${where}: ${w.id} idle while ${k.key} unheld`);
      }
    }
  }
});

test(`property: the state each of ${CASES} random plans leads to gives keep for everyone`, () => {
  for (let seed = 1; seed <= CASES; seed++) {
    const { state, settings: s } = randomCase(seed);
    const p1 = decide(state, s);
    const p2 = decide(apply(state, p1, s), s);
    const changed = p2.workers.filter((w) => w.action !== 'keep');
    assert.deepEqual(changed, [], `seed ${seed}: ${p2.reasons.join('; ')}`);
    const kept = (p: Plan) => new Map(p.workers.filter((w) => w.action !== 'stop').map((w) => [w.id, w.keys]));
    assert.deepEqual(kept(p2), kept(p1), `seed ${seed}`);
  }
});
