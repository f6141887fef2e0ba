/** The live autoscaling benchmark's arithmetic on timestamps and heartbeats, worked out by hand. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { keyCompiles, peakConcurrent, phaseOf, ratio, waitQuantiles, waitsOf, workerSeconds } from '../../bench/autoscale/live-stats.js';

test('workerSeconds: each process from spawn to exit, one still running counted to the end, all cut at the end', () => {
  const lives = [
    { startedAt: 1_000, exitedAt: 4_000 },
    { startedAt: 2_000, exitedAt: null },
    { startedAt: 3_000, exitedAt: 20_000 },
  ];
  assert.equal(workerSeconds(lives, 10_000), 3 + 8 + 7);
  assert.equal(workerSeconds([], 10_000), 0);
  assert.equal(workerSeconds([{ startedAt: 12_000, exitedAt: null }], 10_000), 0, 'a start after the end counts nothing');
});

test('peakConcurrent: overlapping lifetimes; one exiting as another starts counts once', () => {
  const lives = [
    { startedAt: 0, exitedAt: 10 },
    { startedAt: 5, exitedAt: 15 },
    { startedAt: 10, exitedAt: 20 },
    { startedAt: 12, exitedAt: null },
  ];
  assert.equal(peakConcurrent(lives, 30), 3);
  assert.equal(peakConcurrent(lives.slice(0, 1), 30), 1);
  assert.equal(peakConcurrent([], 30), 0);
});

test('keyCompiles: variant compiles over batch sizes, summed over processes', () => {
  assert.equal(
    keyCompiles([
      { pid: 1, compiles: 12, batch_sizes: [1, 2, 4, 8] },
      { pid: 2, compiles: 8, batch_sizes: [1, 2, 4, 8] },
      { pid: 3, compiles: 2, batch_sizes: [1, 2] },
    ]),
    6,
  );
  assert.equal(keyCompiles([]), 0);
});

test('waitsOf and waitQuantiles: seconds from queued_ms, records without it counted apart; nearest-rank quantiles', () => {
  const { waits, missing } = waitsOf([{ queued_ms: 500 }, { queued_ms: 1500 }, {}, { queued_ms: 0 }]);
  assert.deepEqual(waits, [0.5, 1.5, 0]);
  assert.equal(missing, 1);
  const w = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.deepEqual(waitQuantiles(w), { p50: 50, p95: 95, p99: 99 });
  assert.deepEqual(waitQuantiles([]), { p50: 0, p95: 0, p99: 0 });
});

test('ratio: two decimals, null over a zero prediction', () => {
  assert.equal(ratio(3, 2), 1.5);
  assert.equal(ratio(1, 3), 0.33);
  assert.equal(ratio(1, 0), null);
});

test('phaseOf: consecutive phases from 0; a time past the end is in the last one', () => {
  const phases = [{ seconds: 60 }, { seconds: 40 }, { seconds: 60 }];
  assert.deepEqual(
    [0, 59.9, 60, 99.9, 100, 159, 400].map((t) => phaseOf(t, phases)),
    [0, 0, 1, 1, 2, 2, 2],
  );
});
