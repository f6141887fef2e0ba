/** Key holding, registry pruning, worker health and batch diagnosis: pure decisions, no Redis. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loopHealth, planKeys, withLoopHealth, workerHealth, type HeldView } from '../../src/worker/key-policy.js';
import { prunableEntries, NO_WORK, type QueueWork } from '../../src/shared/registry.js';
import { diagnoseKeys } from '../../src/shared/key-health.js';
import type { Heartbeat } from '../../src/shared/heartbeats.js';

const W = (waiting = 0, delayed = 0, active = 0): QueueWork => ({ waiting, delayed, active });
const held = (id: string, lastServedAt: number, work: QueueWork = NO_WORK, bytes = 0, inHand = 0): HeldView => ({
  id,
  lastServedAt,
  work,
  bytes,
  inHand,
});

test('planKeys: with room, every key that needs a holder is held; keys without work are not compiled', () => {
  const p = planKeys({
    held: [],
    candidates: [
      { id: 'a', work: W(3), heldElsewhere: false },
      { id: 'b', work: NO_WORK, heldElsewhere: false },
      { id: 'c', work: W(0, 1), heldElsewhere: false },
    ],
    maxKeys: 4,
    budgetBytes: 100,
  });
  assert.deepEqual(p, { release: [], hold: ['a', 'c'], refused: [] });
});

test('planKeys: at max keys, the least recently served idle key is released for a key with work', () => {
  const p = planKeys({
    held: [held('x', 50), held('y', 10), held('z', 5, W(2))],
    candidates: [{ id: 'k', work: W(4), heldElsewhere: false }],
    maxKeys: 3,
    budgetBytes: 100,
  });
  // z was served longest ago but has work: y goes
  assert.deepEqual(p, { release: ['y'], hold: ['k'], refused: [] });
});

test('planKeys: a key is not idle while its queue has active jobs or the worker holds one of its jobs', () => {
  const p = planKeys({
    held: [held('x', 1, W(0, 0, 1)), held('y', 2, NO_WORK, 0, 1)],
    candidates: [{ id: 'k', work: W(1), heldElsewhere: false }],
    maxKeys: 2,
    budgetBytes: 100,
  });
  assert.deepEqual(p, { release: [], hold: [], refused: [{ id: 'k', reason: 'max_keys' }] });
});

test('planKeys: over the cache budget, enough idle keys are released to fit, else the key is refused and nothing is released', () => {
  const h = [held('x', 1, NO_WORK, 40), held('y', 2, NO_WORK, 40), held('z', 3, W(1), 40)];
  const fit = planKeys({ held: h, candidates: [{ id: 'k', work: W(1), heldElsewhere: false }], maxKeys: 10, budgetBytes: 100 });
  assert.deepEqual(fit, { release: ['x'], hold: ['k'], refused: [] });
  const tight = planKeys({ held: h, candidates: [{ id: 'k', work: W(1), heldElsewhere: false }], maxKeys: 10, budgetBytes: 30 });
  assert.deepEqual(tight, { release: [], hold: [], refused: [{ id: 'k', reason: 'cache_budget' }] });
});

test('planKeys: a key held by another worker takes a free slot but never causes a release', () => {
  const full = planKeys({ held: [held('x', 1)], candidates: [{ id: 'k', work: W(9), heldElsewhere: true }], maxKeys: 1, budgetBytes: 100 });
  assert.deepEqual(full, { release: [], hold: [], refused: [] });
  const room = planKeys({ held: [], candidates: [{ id: 'k', work: W(9), heldElsewhere: true }], maxKeys: 1, budgetBytes: 100 });
  assert.deepEqual(room.hold, ['k']);
  // active jobs with no live holder (their worker died) need a holder: only its stalled check gives them back
  const orphan = planKeys({
    held: [held('x', 1)],
    candidates: [{ id: 'k', work: W(0, 0, 2), heldElsewhere: false }],
    maxKeys: 1,
    budgetBytes: 100,
  });
  assert.deepEqual(orphan, { release: ['x'], hold: ['k'], refused: [] });
});

test('planKeys: several keys waiting, one idle key: the first is held, the next refused', () => {
  const p = planKeys({
    held: [held('x', 1)],
    candidates: [
      { id: 'a', work: W(1), heldElsewhere: false },
      { id: 'b', work: W(1), heldElsewhere: false },
    ],
    maxKeys: 1,
    budgetBytes: 100,
  });
  assert.deepEqual(p, { release: ['x'], hold: ['a'], refused: [{ id: 'b', reason: 'max_keys' }] });
});

test('prunableEntries: only entries with no work and older than the TTL', () => {
  const work = new Map([
    ['old-busy', W(0, 1)],
    ['old-active', W(0, 0, 1)],
    ['old-empty', NO_WORK],
  ]);
  const entries = [
    { id: 'old-busy', updatedAt: 0 },
    { id: 'old-active', updatedAt: 0 },
    { id: 'old-empty', updatedAt: 0 },
    { id: 'old-unknown', updatedAt: 0 },
    { id: 'fresh', updatedAt: 9_500 },
  ];
  assert.deepEqual(prunableEntries(entries, work, 10_000, 1000), ['old-empty', 'old-unknown']);
});

test('workerHealth: not ok for a failed compile or a refusal with waiting work; ok when their queues are empty', () => {
  assert.deepEqual(workerHealth([{ key: 'a', error: 'boom', work: NO_WORK }], [{ key: 'b', reason: 'max_keys', work: W(0, 0, 3) }]), {
    ok: true,
    problems: [],
  });
  const h = workerHealth([{ key: 'a', error: 'boom', work: W(2, 1) }], [{ key: 'b', reason: 'cache_budget', work: W(5) }]);
  assert.equal(h.ok, false);
  assert.deepEqual(
    h.problems.map((p) => [p.key, p.problem, p.waiting]),
    [
      ['a', 'compile_failed', 3],
      ['b', 'refused', 5],
    ],
  );
  assert.equal(h.problems[0].reason, 'boom');
});

const beat = (id: string, o: Partial<Heartbeat> = {}): Heartbeat => ({
  id,
  state: 'idle',
  models: ['tiny'],
  keys: [],
  compile_failed: [],
  refused: [],
  updated_at: 0,
  ...o,
});

test('diagnoseKeys: held, unservable (no model, no worker, compile failed everywhere), compile_failed, unheld', () => {
  const pending = new Map([
    ['tiny:p16:n16:greedy', 4],
    ['tiny:p32:n16:greedy', 14],
    ['tiny:p64:n16:greedy', 2],
    ['tiny:p16:n32:greedy', 1],
    ['other:p16:n16:greedy', 3],
    ['tiny:p16:n64:greedy', 0],
  ]);
  const beats = [
    beat('w1', {
      keys: ['tiny:p16:n16:greedy'],
      compile_failed: [
        { key: 'tiny:p32:n16:greedy', error: 'out of memory' },
        { key: 'tiny:p64:n16:greedy', error: 'bad' },
      ],
      refused: [{ key: 'tiny:p16:n32:greedy', reason: 'max_keys' }],
    }),
    beat('w2', { compile_failed: [{ key: 'tiny:p32:n16:greedy', error: 'out of memory' }] }),
    beat('gone', { state: 'stopped', models: ['other'], keys: ['other:p16:n16:greedy'] }),
  ];
  const d = new Map(diagnoseKeys(pending, beats).map((x) => [x.key, x]));
  assert.equal(d.has('tiny:p16:n64:greedy'), false, 'no pending, no line');
  assert.deepEqual([d.get('tiny:p16:n16:greedy')!.state, d.get('tiny:p16:n16:greedy')!.holders], ['held', ['w1']]);
  const all = d.get('tiny:p32:n16:greedy')!;
  assert.deepEqual([all.state, all.pending], ['unservable', 14]);
  assert.match(all.reason, /compile failed on every worker.*w1: out of memory.*w2: out of memory/);
  assert.equal(d.get('tiny:p64:n16:greedy')!.state, 'compile_failed');
  const ref = d.get('tiny:p16:n32:greedy')!;
  assert.equal(ref.state, 'unheld');
  assert.match(ref.reason, /w1: max_keys/);
  // the only worker with model "other" stopped
  assert.equal(d.get('other:p16:n16:greedy')!.state, 'unservable');
  assert.match(d.get('other:p16:n16:greedy')!.reason, /no live worker serves model other/);
  assert.equal(diagnoseKeys(new Map([['tiny:p16:n16:greedy', 1]]), [])[0].reason, 'no live worker');
  // problem keys come first
  assert.equal(diagnoseKeys(pending, beats).at(-1)!.state, 'held');
});

test('KeyBook: a failed compile waits for its retry time, shows in health while its key has waiting work, and is forgotten once the key has none', async () => {
  const { KeyBook } = await import('../../src/worker/key-book.js');
  const b = new KeyBook();
  b.compileFailed('k', 'boom', 0, 100, W(2));
  assert.equal(b.canTry('k', 50), false);
  assert.equal(b.canTry('k', 100), true);
  assert.deepEqual(
    b.health().problems.map((p) => [p.key, p.problem, p.waiting]),
    [['k', 'compile_failed', 2]],
  );
  b.noteWork(new Map([['k', W(0, 0, 0)]]), 50);
  assert.equal(b.health().ok, true, 'no waiting work: healthy');
  assert.equal(b.failedCount, 1, 'kept until its retry time');
  b.noteWork(new Map(), 150);
  assert.equal(b.failedCount, 0);
  assert.deepEqual(b.setRefused([{ key: 'r', reason: 'max_keys', work: W(1) }]), ['r']);
  assert.deepEqual(b.setRefused([{ key: 'r', reason: 'max_keys', work: W(1) }]), [], 'a refusal is new only once');
  assert.deepEqual(b.report().refused, [{ key: 'r', reason: 'max_keys' }]);
});

test('loopHealth: ok below the threshold of loop errors in a row; at it, not ok with the count and the last error, and /healthz is not ok', () => {
  assert.deepEqual(loopHealth({ consecutive: 0, last: null }, 5), { ok: true });
  assert.deepEqual(loopHealth({ consecutive: 4, last: 'connect ECONNREFUSED' }, 5), { ok: true });
  const bad = loopHealth({ consecutive: 5, last: 'connect ECONNREFUSED' }, 5);
  assert.equal(bad.ok, false);
  assert.ok(!bad.ok && bad.consecutive_errors === 5 && /5 times in a row/.test(bad.reason) && /ECONNREFUSED/.test(bad.reason));
  const keys = workerHealth([], []);
  assert.equal(withLoopHealth(keys, loopHealth({ consecutive: 1, last: 'x' }, 5)), keys);
  const h = withLoopHealth(keys, bad);
  assert.equal(h.ok, false);
  assert.deepEqual(h.problems, []);
  assert.deepEqual(h.loop, bad);
});
