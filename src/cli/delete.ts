/** `batchgen delete BATCH_ID [--force]`: a batch's records, results, errors and the jobs left in its queues. */
import { parseArgs } from 'node:util';
import { deleteBatch } from '../shared/batch-admin.js';
import { BatchgenError } from '../shared/errors.js';
import { asRedisError, redisUrlFrom } from '../shared/redis.js';
import { GenerationClient } from '../producer/client.js';
import { err, keyspaceFrom, out, progressWrite, REDIS_FLAG_OPTIONS, REDIS_FLAGS_USAGE } from './common.js';

export const DELETE_OPTIONS = { force: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, ...REDIS_FLAG_OPTIONS } as const;

const USAGE = `usage: batchgen delete BATCH_ID [--force] ${REDIS_FLAGS_USAGE}
Removes the batch's waiting, delayed and prioritized jobs from its queues, then every Redis key of the
batch (record, items, results, errors). Refuses a batch that is validating, in progress or
cancelling (cancel it first), and one with requests running on a worker; --force deletes it anyway
(running requests finish, their results are dropped).`;

export async function deleteCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: DELETE_OPTIONS, strict: true, allowPositionals: true });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new BatchgenError('invalid_request', `expected one BATCH_ID\n${USAGE}`);
  const client = await GenerationClient.connect({ redisUrl: values.redis, ...keyspaceFrom(values) });
  const tty = process.stderr.isTTY === true;
  let shown: string | null = null;
  try {
    const r = await deleteBatch(client.redis, client.keys, positionals[0], {
      force: values.force,
      onProgress: (p) => {
        const line = `deleting ${positionals[0]}: ${p.scanned} requests looked at, ${p.removedJobs} queued jobs removed`;
        err(progressWrite(shown, line, tty));
        shown = line;
      },
    });
    if (tty && shown !== null) err('\n');
    if (r.runningJobs > 0)
      err(`warning: ${r.runningJobs} request(s) were running on a worker: they finish, and their results are dropped\n`);
    await out(
      `batch ${r.batchId} deleted (${r.status ?? 'leftovers only'}): ${r.removedJobs} queued job(s) removed, ${r.keysDeleted} key(s) deleted\n`,
    );
    return 0;
  } catch (e) {
    if (tty && shown !== null) err('\n');
    throw asRedisError(e, redisUrlFrom(values.redis));
  } finally {
    await client.close();
  }
}
