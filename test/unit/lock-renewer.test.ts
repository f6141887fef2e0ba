/** Lock renewal tracks jobs by identity, not by object: settling a copy (with its payload) stops its renewal. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Job } from 'bullmq';
import { pino } from 'pino';
import type { Taken } from '../../src/worker/held-queue.js';
import { LockRenewer, type LockContext } from '../../src/worker/lock-renewer.js';

test('a settled copy of a taken job leaves renewal, and only the unsettled ones are renewed', async () => {
  const renewed: string[][] = [];
  const ctx: LockContext = {
    id: 'm:p16:n16:greedy',
    extendLocks: async (jobs) => {
      renewed.push(jobs.map((t) => t.job.id!));
      return [];
    },
  };
  const taken: Taken[] = ['a', 'b', 'c'].map((id) => ({ job: { id } as Job, token: `w:${id}` }));
  const r = new LockRenewer(ctx, 150, pino({ level: 'silent' }), taken);
  try {
    // the settler works on copies that carry the payload
    r.untrack({ ...taken[0], payload: { custom_id: 'a' } } as Taken);
    r.untrack({ ...taken[2] });
    assert.equal(r.size, 1);
    await new Promise((res) => setTimeout(res, 200));
    assert.ok(renewed.length >= 1);
    for (const ids of renewed) assert.deepEqual(ids, ['b']);
    // the same id taken with another token is another delivery: not settled by this one
    r.untrack({ job: { id: 'b' } as Job, token: 'other' });
    assert.equal(r.size, 1);
  } finally {
    r.close();
  }
  assert.equal(r.size, 0);
});
