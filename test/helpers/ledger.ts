/**
 * The ledger check of the fault tests: every acknowledged request has exactly one result or one
 * error, none has both, none comes twice, and nothing settles that was not asked for. It reads the
 * batch's records in Redis (results, errors, the settlement order list, the counts) and, when given,
 * the JSONL files a client wrote (results and errors), which must say the same.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import { Keyspace, type KeyspaceOptions } from '../../src/shared/keys.js';

export interface LedgerInput extends KeyspaceOptions {
  redisUrl: string;
  batchId: string;
  /** the custom_ids the producer was told are recorded (acknowledged) */
  acknowledged: Iterable<string>;
  /** a results file written by the client (custom_id per line), checked too when given */
  resultsFile?: string;
  /** an errors file written by the client, checked too when given */
  errorsFile?: string;
}

export interface Ledger {
  results: number;
  errors: number;
}

function idsInFile(file: string): string[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => (JSON.parse(l) as { custom_id: string }).custom_id);
}

function countTwice(ids: string[]): string[] {
  const seen = new Set<string>();
  const twice = new Set<string>();
  for (const id of ids) (seen.has(id) ? twice : seen).add(id);
  return [...twice];
}

/** Asserts the ledger; returns how many results and errors it holds. */
export async function checkLedger(input: LedgerInput): Promise<Ledger> {
  const k = new Keyspace(input).batch(input.batchId);
  const redis = new Redis(input.redisUrl, { maxRetriesPerRequest: 3 });
  try {
    const [results, errors, order, record] = await Promise.all([
      redis.hkeys(k.results),
      redis.hkeys(k.errors),
      redis.lrange(k.order, 0, -1),
      redis.hgetall(k.record),
    ]);
    const acked = new Set(input.acknowledged);
    const res = new Set(results);
    const err = new Set(errors);
    const both = results.filter((id) => err.has(id));
    assert.deepEqual(both, [], 'no request has both a result and an error');
    const missing = [...acked].filter((id) => !res.has(id) && !err.has(id));
    assert.deepEqual(missing, [], 'every acknowledged request has a result or an error');
    const extra = [...res, ...err].filter((id) => !acked.has(id));
    assert.deepEqual(extra, [], 'nothing settles that was not acknowledged');
    assert.deepEqual(countTwice(order), [], 'no request is settled twice (order list)');
    assert.equal(order.length, res.size + err.size, 'the order list holds each settlement once');
    assert.equal(Number(record.completed), res.size, 'the completed count is the number of results');
    assert.equal(Number(record.failed), err.size, 'the failed count is the number of errors');
    if (input.resultsFile) {
      const lines = idsInFile(input.resultsFile);
      assert.deepEqual(countTwice(lines), [], 'no result line twice in the results file');
      assert.deepEqual([...lines].sort(), [...res].sort(), 'the results file holds exactly the results');
    }
    if (input.errorsFile) {
      const lines = idsInFile(input.errorsFile).filter((id) => acked.has(id));
      assert.deepEqual(countTwice(lines), [], 'no error line twice in the errors file');
      assert.deepEqual([...lines].sort(), [...err].sort(), 'the errors file holds exactly the errors');
    }
    return { results: res.size, errors: err.size };
  } finally {
    redis.disconnect();
  }
}
