/** The autoscaling simulator on traces small enough to work out by hand. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { quantile, simulate, type Controller, type SimKey } from '../../bench/autoscale/simulator.js';
import { poissonTrace, zipfWeights } from '../../bench/autoscale/trace.js';
import type { Plan } from '../../src/autoscaler/types.js';

const K: SimKey = { key: 'm:a', model: 'm', compileSeconds: 10, batchSeconds: { 1: 2, 2: 3, 4: 4, 8: 6 }, bytes: 1 };

test('one key, one worker: start, compile, then FIFO batches give the waits worked out by hand', () => {
  const start: Controller = (s): Plan =>
    s.workers.length === 0
      ? { desired_workers: 1, workers: [{ id: 'w-1', keys: ['m:a'], action: 'start' }], reasons: [] }
      : { desired_workers: 1, workers: [{ id: 'w-1', keys: ['m:a'], action: 'keep' }], reasons: [] };
  const r = simulate(
    [K],
    [
      { t: 1, key: 'm:a' },
      { t: 2, key: 'm:a' },
      { t: 20, key: 'm:a' },
    ],
    start,
    {
      intervalSeconds: 1,
      startSeconds: 5,
      batchSizes: [1],
      horizonSeconds: 30,
    },
  );
  // ready at 5, compiled at 15: job 1 runs 15-17, job 2 17-19, job 3 at once at 20
  assert.deepEqual(r.waits, [14, 15, 0]);
  assert.equal(r.unserved, 0);
  assert.equal(r.compiles, 1);
  assert.equal(r.compileSeconds, 10);
  assert.equal(r.workerSeconds, 30);
});

test('jobs that wait together run as one batch on the smallest size that fits; a stop waits for the batch in hand', () => {
  const c: Controller = (s): Plan => ({
    desired_workers: s.now >= 15 ? 0 : 1,
    workers: [{ id: 'w-0', keys: ['m:a'], action: s.now >= 15 ? 'stop' : 'keep' }],
    reasons: [],
  });
  const arrivals = [0.5, 0.5, 0.5, 11, 40].map((t) => ({ t, key: 'm:a' }));
  const r = simulate([K], arrivals, c, { intervalSeconds: 1, initialWorkers: ['w-0'], horizonSeconds: 60 });
  // assigned at 0, compiled at 10; the three first run as B=4 from 10 to 14; the fourth 14-16 (B=1);
  // stopped at 15, gone at 16; the last never runs
  assert.deepEqual(r.waits, [9.5, 9.5, 9.5, 3]);
  assert.equal(r.unserved, 1);
  assert.equal(r.workerSeconds, 16);
});

test('a key taken away mid-compile is not held; the worker is idle, not serving it', () => {
  const c: Controller = (s): Plan => ({
    desired_workers: 1,
    workers: [{ id: 'w-0', keys: s.now < 5 ? ['m:a'] : [], action: 'keep' }],
    reasons: [],
  });
  const r = simulate([K], [{ t: 12, key: 'm:a' }], c, { intervalSeconds: 1, initialWorkers: ['w-0'], horizonSeconds: 30 });
  assert.equal(r.waits.length, 0);
  assert.equal(r.unserved, 1);
  assert.equal(r.compiles, 1);
});

test('traces: Zipf weights fall with rank and sum to 1; the same seed gives the same arrivals', () => {
  const w = zipfWeights(12, 1.1);
  assert.ok(Math.abs(w.reduce((a, b) => a + b, 0) - 1) < 1e-12);
  for (let i = 1; i < w.length; i++) assert.ok(w[i] < w[i - 1]);
  const phases = [
    { seconds: 100, rate: 2 },
    { seconds: 50, rate: 20 },
  ];
  const a = poissonTrace(['x', 'y'], [0.7, 0.3], phases, 5);
  assert.deepEqual(poissonTrace(['x', 'y'], [0.7, 0.3], phases, 5), a);
  assert.notDeepEqual(poissonTrace(['x', 'y'], [0.7, 0.3], phases, 6), a);
  // the burst phase is denser: about 1000 arrivals in 50 s against about 200 in 100 s
  const inBurst = a.filter((x) => x.t >= 100).length;
  assert.ok(inBurst > 2 * a.filter((x) => x.t < 100).length);
  assert.equal(quantile([5, 1, 3, 2, 4], 0.5), 3);
  assert.equal(quantile([5, 1, 3, 2, 4], 1), 5);
});
