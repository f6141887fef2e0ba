/**
 * A worker process's /metrics, with a real redis-server: the text passes `promtool check metrics`
 * before and after jobs, the counters move by exactly the jobs run, and the queue gauges show jobs
 * waiting behind a busy worker.
 */
import { until as untilEvery } from '../helpers/until.js';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { freePort, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { promtoolCheck, promtoolMissing } from '../helpers/promtool.js';
import { GenerationClient } from '../../src/producer/client.js';

/** Polled every 50 ms: the scrapes below look for states that last a few hundred ms. */
const until = <T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 60_000) => untilEvery(what, fn, timeoutMs, 50);

const skip = (!hasRedisServer() && 'redis-server is not installed') || promtoolMissing;
const KEY = 'tiny:p16:n16:greedy';
const K = `{key="${KEY}"}`;
let redis: RedisServer;
let model: string;
const workers: WorkerProcess[] = [];
const quiet = pino({ level: 'silent' });

before(async () => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  redis = await startRedisServer();
});

after(async () => {
  for (const w of workers) await w.stop(5000);
  await redis?.stop();
});

/** A noop worker holding KEY from the start, serving metrics on a free port. */
async function worker(prefix: string, extra: string[] = [], faults?: object): Promise<{ w: WorkerProcess; scrape: () => Promise<Scrape> }> {
  const port = await freePort();
  const w = spawnWorker(
    redis.url,
    [`tiny=${model}`],
    ['--prefix', prefix, '--id', `${prefix}1`, '--engine', 'noop', '--keys', KEY, '--metrics-port', String(port), ...extra],
    faults ? { BATCHGEN_FAULTS: JSON.stringify(faults) } : {},
  );
  workers.push(w);
  await w.waitForMsg('warm: taking jobs');
  return {
    w,
    scrape: async () => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      assert.equal(res.status, 200);
      return new Scrape(await res.text());
    },
  };
}

/** One /metrics text; `value` reads a series (0 when absent: a labelled counter not yet moved). */
class Scrape {
  constructor(readonly text: string) {}
  value(series: string): number {
    const line = this.text.split('\n').find((l) => l.startsWith(`${series} `));
    return line === undefined ? 0 : Number(line.slice(series.length + 1));
  }
  has(series: string): boolean {
    return this.text.split('\n').some((l) => l.startsWith(`${series} `));
  }
}

const client = (prefix: string) =>
  GenerationClient.connect({ redisUrl: redis.url, prefix, models: [{ name: 'tiny', dir: model }], logger: quiet });
const requests = (n: number, maxNew: number) =>
  Array.from({ length: n }, (_, i) => ({ custom_id: `r${i}`, model: 'tiny', prompt: `metrics request ${i}`, max_new_tokens: maxNew }));

async function assertPromtoolClean(s: Scrape, when: string): Promise<void> {
  assert.deepEqual(await promtoolCheck(s.text), { code: 0, output: '' }, `promtool on the metrics ${when}`);
}

test('worker process: /metrics passes promtool before and after jobs; counters move by exactly the jobs run', {
  skip,
  timeout: 120_000,
}, async () => {
  const { scrape } = await worker('mt');
  const c = await client('mt');
  try {
    const s0 = await scrape();
    await assertPromtoolClean(s0, 'of a warm worker');
    assert.equal(s0.value(`batchgen_compiles_total${K}`), 4, 'one compile per batch size, before any job');
    assert.equal(s0.value('batchgen_worker_info{worker="mt1",engine="noop",backend="none"}'), 1);
    assert.equal(s0.value('batchgen_keys_held'), 1);
    assert.ok(s0.has('process_cpu_seconds_total'), 'prom-client process metrics on the worker registry');
    const n = 5;
    const maxNew = 3;
    const h = await c.submitBatch(requests(n, maxNew), { batchId: 'm1' });
    assert.equal(h.report!.keys[0], KEY);
    await h.wait({ timeoutMs: 60_000 });
    // the results are written just before the jobs are counted: wait for the count, then check it exactly
    const s1 = await until('the completions counted', async () => {
      const s = await scrape();
      return s.value(`batchgen_jobs_completed_total${K}`) - s0.value(`batchgen_jobs_completed_total${K}`) >= n && s;
    });
    await assertPromtoolClean(s1, 'after the jobs');
    const delta = (series: string) => s1.value(series) - s0.value(series);
    assert.deepEqual(
      {
        completed: delta(`batchgen_jobs_completed_total${K}`),
        failed: delta(`batchgen_jobs_failed_total${K}`),
        rows: delta(`batchgen_rows_total${K}`),
        // the noop engine answers max_new_tokens tokens per row
        tokens: delta(`batchgen_generated_tokens_total${K}`),
        bucketTokens: delta(`batchgen_prompt_bucket_tokens_total${K}`),
        queueWaits: delta(`batchgen_queue_wait_seconds_count${K}`),
        fills: delta(`batchgen_batch_fill_ratio_count${K}`),
        compiles: delta(`batchgen_compiles_total${K}`),
        retraces: s1.value('batchgen_retraces_total'),
        waiting: s1.value(`batchgen_queue_waiting_jobs${K}`),
      },
      {
        completed: n,
        failed: 0,
        rows: n,
        tokens: n * maxNew,
        bucketTokens: n * 16,
        queueWaits: n,
        fills: delta(`batchgen_batches_total${K}`),
        compiles: 0,
        retraces: 0,
        waiting: 0,
      },
    );
    const batches = delta(`batchgen_batches_total${K}`);
    assert.ok(batches >= 1 && batches <= n, `${batches} batches for ${n} jobs`);
    assert.equal(delta(`batchgen_batch_seconds_count${K}`), batches);
    const prompt = delta(`batchgen_prompt_tokens_total${K}`);
    assert.ok(prompt > 0 && prompt <= n * 16, `${prompt} prompt tokens`);
    assert.ok(delta(`batchgen_queue_wait_seconds_sum${K}`) > 0);
  } finally {
    await c.close();
  }
});

test('worker process: jobs waiting behind a busy worker show in the queue gauges, with the age of the next one', {
  skip,
  timeout: 120_000,
}, async () => {
  // one row per batch, each batch held 400 ms: the others wait in the queue meanwhile
  const { scrape } = await worker('mq', ['--batch-sizes', '1'], { runDelayMs: 400 });
  const c = await client('mq');
  try {
    const t0 = Date.now();
    const h = await c.submitBatch(requests(4, 2), { batchId: 'm2' });
    const s = await until('a scrape with jobs waiting while one runs', async () => {
      const x = await scrape();
      return x.value(`batchgen_queue_waiting_jobs${K}`) > 0 && x.value(`batchgen_queue_active_jobs${K}`) > 0 && x;
    });
    const age = s.value(`batchgen_queue_oldest_job_age_seconds${K}`);
    assert.ok(age > 0 && age <= (Date.now() - t0) / 1000, `oldest job age ${age} s, ${(Date.now() - t0) / 1000} s after the submit began`);
    assert.ok(s.value(`batchgen_queue_waiting_jobs${K}`) <= 3);
    assert.equal(s.value('batchgen_queue_read_errors_total'), 0);
    await assertPromtoolClean(s, 'while jobs wait');
    await h.wait({ timeoutMs: 60_000 });
    const done = await until('the queue empty', async () => {
      const x = await scrape();
      return x.value(`batchgen_jobs_completed_total${K}`) === 4 && x;
    });
    assert.deepEqual(
      [
        done.value(`batchgen_queue_waiting_jobs${K}`),
        done.value(`batchgen_queue_oldest_job_age_seconds${K}`),
        done.value(`batchgen_dummy_rows_total${K}`),
      ],
      [0, 0, 0],
    );
  } finally {
    await c.close();
  }
});
