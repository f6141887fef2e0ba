/** The watchdog's verdict, the shutdown budget and outage bookkeeping: pure decisions. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { watchdogVerdict, type WatchdogInput } from '../../src/worker/watchdog.js';
import { stopBudget } from '../../src/worker/shutdown.js';
import { Outage, isConnectionError, isOutOfMemory } from '../../src/shared/outage.js';
import { retryDelayMs } from '../../src/producer/outage-policy.js';

const base: WatchdogInput = {
  now: 100_000,
  lastFetchAt: 99_000,
  waiting: 5,
  running: false,
  lastPongAt: 99_500,
  oomSince: null,
  staleAfterMs: 10_000,
};

test('watchdogVerdict: ok while Redis answers and fetches succeed', () => {
  assert.deepEqual(watchdogVerdict(base), { ok: true });
});

test('watchdogVerdict: Redis silent past the bound comes first', () => {
  const v = watchdogVerdict({ ...base, lastPongAt: 80_000, lastFetchAt: 70_000 });
  assert.equal(v.ok, false);
  assert.equal(!v.ok && v.problem, 'redis_not_answering');
  assert.equal(!v.ok && v.since_ms, 20_000);
});

test('watchdogVerdict: no fetch past the bound is a problem only while jobs wait and no batch runs', () => {
  const stale = { ...base, lastFetchAt: 85_000 };
  assert.equal((watchdogVerdict(stale) as { problem: string }).problem, 'not_fetching');
  assert.deepEqual(watchdogVerdict({ ...stale, waiting: 0 }), { ok: true });
  assert.deepEqual(watchdogVerdict({ ...stale, running: true }), { ok: true });
  assert.deepEqual(watchdogVerdict({ ...base, lastFetchAt: 90_000 }), { ok: true }, 'exactly at the bound is still ok');
});

test('watchdogVerdict: out of memory is reported while it lasts', () => {
  const v = watchdogVerdict({ ...base, oomSince: 97_000 });
  assert.equal(!v.ok && v.problem, 'redis_out_of_memory');
  assert.equal(!v.ok && v.since_ms, 3000);
});

test('stopBudget: finishing plus closing stays under the shutdown timeout', () => {
  for (const t of [0, 1000, 5000, 30_000, 120_000]) {
    const b = stopBudget(t);
    assert.ok(b.finishMs >= 0 && b.closeMs >= 0);
    assert.ok(b.finishMs + b.closeMs < t || t === 0, `${t}: ${JSON.stringify(b)}`);
  }
  assert.deepEqual(stopBudget(30_000), { finishMs: 24_000, closeMs: 5000 });
});

test('Outage: told once when it begins and once when it ends, with its length', () => {
  const o = new Outage();
  assert.equal(o.end(5), null, 'nothing to end');
  assert.equal(o.begin(10, 'ECONNREFUSED'), true);
  assert.equal(o.begin(20, 'ECONNREFUSED'), false);
  assert.equal(o.downSince, 10);
  assert.equal(o.end(35), 25);
  assert.equal(o.end(40), null);
  assert.equal(o.begin(50, 'x'), true, 'a new outage is told again');
});

test('error kinds and retry delays', () => {
  assert.ok(isConnectionError(new Error('connect ECONNREFUSED 127.0.0.1:6379')));
  assert.ok(!isConnectionError(new Error("OOM command not allowed when used memory > 'maxmemory'.")));
  assert.ok(isOutOfMemory(new Error("OOM command not allowed when used memory > 'maxmemory'. script: abc")));
  assert.ok(!isOutOfMemory(new Error('ERR unknown command')));
  assert.deepEqual([0, 1, 2, 3, 4, 5, 20].map(retryDelayMs), [100, 200, 400, 800, 1600, 2000, 2000]);
});
