/**
 * Pure parts of the autoscaler's edges: the state assembled from raw Redis reads, what an assigned
 * worker does with its set, the assignments a plan writes, the heartbeat's new fields, key names.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assembleState,
  arrivalRate,
  median,
  delayedScoreUpTo,
  type AutoscalerHeartbeat,
  type RawState,
  type KeyRead,
} from '../../src/autoscaler/state.js';
import { plannedAssignments, reasonKind, resolveSettings } from '../../src/autoscaler/autoscaler.js';
import { workerArgs } from '../../src/autoscaler/drivers/local.js';
import { planAssigned } from '../../src/worker/key-policy.js';
import { idleMs, ServiceMeter } from '../../src/worker/heartbeat.js';
import { resolveOptions } from '../../src/worker/options.js';
import { assignedKeys } from '../../src/shared/assignments.js';
import { Keyspace } from '../../src/shared/keys.js';
import { parseKeyId } from '../../src/shared/compile-key.js';

const NOW = 1_700_000_000_000;

function keyRead(id: string, o: Partial<KeyRead> = {}): KeyRead {
  return { id, key: parseKeyId(id), waiting: 0, prioritized: 0, delayedDue: 0, active: 0, arrivals: 0, oldestAt: null, ...o };
}

function beat(id: string, o: Partial<AutoscalerHeartbeat> = {}): AutoscalerHeartbeat {
  return {
    id,
    state: 'idle',
    models: ['tiny'],
    keys: [],
    compile_failed: [],
    refused: [],
    assigned: true,
    compile_s: {},
    service: {},
    key_bytes: {},
    budget_bytes: 1000,
    used_bytes: 0,
    idle_ms: 0,
    started_at: NOW - 60_000,
    updated_at: NOW,
    ...o,
  };
}

function raw(o: Partial<RawState> = {}): RawState {
  return { now: NOW, keys: [], heartbeats: [], assignments: new Map(), running: [], ...o };
}

const A = 'tiny:p16:n16:greedy';
const B = 'tiny:p32:n16:greedy';
const OTHER = 'other:p16:n16:greedy';

test('a key: backlog is waiting + prioritized + due delayed; active apart; oldest age from the oldest runnable job', () => {
  const { state } = assembleState(
    raw({ keys: [keyRead(A, { waiting: 3, prioritized: 2, delayedDue: 1, active: 4, oldestAt: NOW - 7_500 })] }),
    null,
    ['tiny'],
  );
  assert.equal(state.keys.length, 1);
  assert.equal(state.keys[0].backlog, 6);
  assert.equal(state.keys[0].active, 4);
  assert.equal(state.keys[0].oldestAgeSeconds, 7.5);
  assert.equal(state.keys[0].model, 'tiny');
});

test('keys of models the autoscaler does not start are left out', () => {
  const { state } = assembleState(raw({ keys: [keyRead(A, { waiting: 1 }), keyRead(OTHER, { waiting: 5 })] }), null, ['tiny']);
  assert.deepEqual(
    state.keys.map((k) => k.key),
    [A],
  );
});

test('arrival rate: jobs counted since the last read over the seconds between reads', () => {
  const first = assembleState(raw({ now: NOW, keys: [keyRead(A, { arrivals: 100 })] }), null, ['tiny']);
  assert.equal(first.state.keys[0].arrivalRate, 0, 'no previous read: no rate');
  const second = assembleState(raw({ now: NOW + 4000, keys: [keyRead(A, { arrivals: 120 })] }), first.sample, ['tiny']);
  assert.equal(second.state.keys[0].arrivalRate, 5);
  assert.equal(arrivalRate(second.sample, A, 10, NOW + 8000), 0, 'a counter that went back (reset) gives no rate');
  assert.equal(arrivalRate(second.sample, B, 10, NOW + 8000), 0, 'a key new since the last read gives no rate');
});

test('service rate, compile seconds and bytes of a key: the median of the heartbeats that report them', () => {
  const svc = (j: number) => ({ [A]: { jobs_per_s: j, tokens_per_s: j * 10 } });
  const { state } = assembleState(
    raw({
      keys: [keyRead(A), keyRead(B)],
      heartbeats: [
        beat('w1', { service: svc(1), compile_s: { [A]: 2 }, key_bytes: { [A]: 100 } }),
        beat('w2', { service: svc(3), compile_s: { [A]: 4 }, key_bytes: { [A]: 300 } }),
        beat('w3', { service: svc(8), compile_s: { [A]: 9 } }),
      ],
    }),
    null,
    ['tiny'],
  );
  const a = state.keys.find((k) => k.key === A)!;
  const b = state.keys.find((k) => k.key === B)!;
  assert.deepEqual([a.serviceRate, a.compileSeconds, a.bytes], [3, 4, 200]);
  assert.deepEqual([b.serviceRate, b.compileSeconds, b.bytes], [null, null, null]);
  assert.equal(median([5, 1, 3, 2]), 2.5);
});

test('workers: live heartbeats of assigned workers, with their assignment, held keys, idle and age', () => {
  const { state, gone } = assembleState(
    raw({
      now: NOW + 2000,
      heartbeats: [beat('w1', { keys: [A], idle_ms: 3000, updated_at: NOW, used_bytes: 40 }), beat('reg', { assigned: false })],
      assignments: new Map([['w1', [A]]]),
    }),
    null,
    ['tiny'],
  );
  assert.deepEqual(gone, []);
  assert.equal(state.workers.length, 1, 'a worker not started with --assigned is not the autoscaler’s');
  const w = state.workers[0];
  assert.deepEqual([w.id, w.assigned, w.held, w.state, w.usedBytes, w.budgetBytes], ['w1', [A], [A], 'idle', 40, 1000]);
  assert.equal(w.idleSeconds, 5, 'idle since its heartbeat plus the time since it was written');
  assert.equal(w.ageSeconds, 62);
  assert.equal(w.pending, undefined);
});

test('a worker whose heartbeat expired and that the driver does not run is gone: its assignment is to be deleted', () => {
  const { state, gone } = assembleState(
    raw({
      assignments: new Map([
        ['dead', [A]],
        ['w1', [B]],
      ]),
      heartbeats: [beat('w1', { keys: [B] })],
    }),
    null,
    ['tiny'],
  );
  assert.deepEqual(gone, ['dead']);
  assert.deepEqual(
    state.workers.map((w) => w.id),
    ['w1'],
  );
});

test('a stopped heartbeat: gone when not running; pending when the driver runs a worker of that id again', () => {
  const stopped = beat('w1', { state: 'stopped' });
  const a = assembleState(raw({ heartbeats: [stopped], assignments: new Map([['w1', [A]]]) }), null, ['tiny']);
  assert.deepEqual(a.gone, ['w1']);
  assert.equal(a.state.workers.length, 0);
  const b = assembleState(raw({ heartbeats: [stopped], assignments: new Map([['w1', [A]]]), running: ['w1'] }), null, ['tiny']);
  assert.deepEqual(b.gone, []);
  assert.deepEqual([b.state.workers[0].state, b.state.workers[0].pending, b.state.workers[0].assigned], ['starting', true, [A]]);
});

test('a worker the driver started that has not written a heartbeat yet is pending, with the budget the others report', () => {
  const { state, gone } = assembleState(
    raw({ running: ['new'], heartbeats: [beat('w1', { budget_bytes: 5000 })], assignments: new Map([['new', [A]]]) }),
    null,
    ['tiny'],
  );
  assert.deepEqual(gone, []);
  const w = state.workers.find((x) => x.id === 'new')!;
  assert.deepEqual([w.state, w.pending, w.budgetBytes, w.models], ['starting', true, 5000, ['tiny']]);
});

test('run state: busy states map to busy (idle 0); idle with an assigned key not yet held is warming', () => {
  const s = (h: AutoscalerHeartbeat, assigned: string[]) =>
    assembleState(raw({ heartbeats: [h], assignments: new Map([[h.id, assigned]]) }), null, ['tiny']).state.workers[0];
  assert.deepEqual(
    [s(beat('w', { state: 'running', idle_ms: 0 }), [A]).state, s(beat('w', { state: 'running' }), [A]).idleSeconds],
    ['busy', 0],
  );
  assert.equal(s(beat('w', { keys: [] }), [A]).state, 'warming');
  assert.equal(s(beat('w', { keys: [A] }), [A]).state, 'idle');
  assert.equal(s(beat('w', { refused: [{ key: A }] }), [A]).state, 'idle', 'a refused key is not being warmed');
  assert.equal(s(beat('w', { state: 'draining' }), []).state, 'draining');
});

test('BullMQ delayed scores: due up to a time means every score of that millisecond', () => {
  assert.equal(delayedScoreUpTo(10), 11 * 0x1000 - 1);
  assert.ok(10 * 0x1000 + 0xfff <= delayedScoreUpTo(10));
  assert.ok(11 * 0x1000 > delayedScoreUpTo(10));
});

test('an assigned worker releases keys taken away, holds keys newly assigned, and skips keys it cannot serve', () => {
  const servable = (id: string) => id.startsWith('tiny:');
  const p = planAssigned([A, 'tiny:p64:n16:greedy'], [B, A, B, OTHER], servable);
  assert.deepEqual(p.release, ['tiny:p64:n16:greedy']);
  assert.deepEqual(p.hold, [B]);
  assert.deepEqual(p.foreign, [OTHER]);
  assert.deepEqual(planAssigned([A], [], servable), { release: [A], hold: [], foreign: [] });
});

test('assignment sets read from Redis: members that are not compile keys are left out', () => {
  assert.deepEqual(assignedKeys([B, 'junk', A, 'x:p1']), [A, B]);
  assert.deepEqual(assignedKeys('not a list'), []);
});

test('a plan writes each kept or started worker its keys (deduplicated), and a stopped worker none', () => {
  const m = plannedAssignments({
    desired_workers: 2,
    workers: [
      { id: 'w1', keys: [B, A, B], action: 'keep' },
      { id: 'w2', keys: [A], action: 'start' },
      { id: 'w3', keys: [A], action: 'stop' },
    ],
    reasons: [],
  });
  assert.deepEqual(Object.fromEntries(m), { w1: [A, B], w2: [A], w3: [] });
});

test('decisions are counted by the first word of their reason', () => {
  assert.equal(reasonKind('start tiny:p16:n16:greedy → w-1 (new): backlog'), 'start');
  assert.equal(reasonKind('stop w-2: idle 31 s ≥ 30 s'), 'stop');
  assert.equal(reasonKind('42 things'), 'other');
});

test('settings: defaults merged once, and a minimum above the maximum refused', () => {
  assert.equal(resolveSettings({ maxWorkers: 3 }).maxWorkers, 3);
  assert.equal(resolveSettings({}).minWorkers, 0);
  assert.throws(() => resolveSettings({ minWorkers: 4, maxWorkers: 2 }), /minWorkers \(4\) is above maxWorkers \(2\)/);
  assert.throws(() => resolveSettings({ idleSeconds: -1 }), /idleSeconds/);
});

test('the local driver starts a worker as `worker --assigned --id ID` with the models, Redis, prefix and extra flags', () => {
  const args = workerArgs({ models: ['tiny=/m/tiny'], redisUrl: 'redis://h:1', prefix: '{p}', workerArgs: ['--lock-ms', '2000'] }, 'w-1');
  assert.deepEqual(args, [
    '--assigned',
    '--id',
    'w-1',
    '--model',
    'tiny=/m/tiny',
    '--redis',
    'redis://h:1',
    '--prefix',
    '{p}',
    '--lock-ms',
    '2000',
  ]);
});

test('worker options: --assigned needs an id that can name a key, and excludes --keys', () => {
  const models = [{ name: 'tiny', dir: '/m' }];
  assert.throws(() => resolveOptions({ models, assigned: true }), /needs its id/);
  assert.throws(() => resolveOptions({ models, assigned: true, id: 'w1', keys: [A] }), /exclude each other/);
  assert.throws(() => resolveOptions({ models, assigned: true, id: 'a:b' }), /worker id "a:b"/);
  assert.equal(resolveOptions({ models, assigned: true, id: 'w1' }).assigned, true);
  assert.equal(resolveOptions({ models, id: 'a:b' }).assigned, false, 'without --assigned any id is taken, as before');
});

test('heartbeat: service per second of busy time per key; idle since the last batch, 0 while busy', () => {
  const m = new ServiceMeter();
  m.record(A, 4, 40, 2000, NOW);
  m.record(A, 2, 20, 1000, NOW + 5000);
  m.record(B, 1, 0, 0, NOW);
  const r = m.report();
  assert.deepEqual(Object.keys(r), [A], 'a key with no measured busy time reports no rate');
  assert.deepEqual([r[A].jobs_per_s, r[A].tokens_per_s, r[A].busy_s], [2, 20, 3]);
  assert.equal(m.lastBatchAt, NOW + 5000);
  assert.equal(idleMs('idle', m.lastBatchAt, NOW - 1000, NOW + 7000), 2000);
  assert.equal(idleMs('idle', 0, NOW, NOW + 1500), 1500, 'no batch yet: idle since it started');
  assert.equal(idleMs('running', m.lastBatchAt, NOW, NOW + 9000), 0);
});

test('Keyspace: assignment sets and arrival counters', () => {
  const ks = new Keyspace({ prefix: 'bg', hashTag: true });
  assert.equal(ks.assignment('w-1'), '{bg}:assign:w-1');
  assert.equal(ks.workerOfAssignment(ks.assignment('w-1')), 'w-1');
  assert.equal(ks.workerOfAssignment('{bg}:worker:w-1'), null);
  assert.equal(ks.assignmentsPattern(), '{bg}:assign:*');
  assert.throws(() => ks.assignment('a:b'), /worker id/);
  assert.equal(ks.arrivals(A), `{bg}:arrivals:${A}`);
  assert.equal(ks.queue(A).job('b1/r1'), `{bg}:gen:tiny:p16:n16:greedy:b1/r1`);
});
