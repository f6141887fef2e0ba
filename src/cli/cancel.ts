/** `batchgen cancel BATCH_ID`: removes the batch's waiting jobs; running ones finish. */
import { parseArgs } from 'node:util';
import { BatchgenError } from '../shared/errors.js';
import { GenerationClient } from '../producer/client.js';
import { keyspaceFrom, out, REDIS_FLAG_OPTIONS } from './common.js';

const USAGE = `usage: batchgen cancel BATCH_ID [--redis URL]`;

export async function cancelCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { help: { type: 'boolean', short: 'h' }, ...REDIS_FLAG_OPTIONS },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new BatchgenError('invalid_request', `expected one BATCH_ID\n${USAGE}`);
  const client = await GenerationClient.connect({ redisUrl: values.redis, ...keyspaceFrom(values) });
  try {
    const r = await client.cancel(positionals[0]);
    const c = r.counts;
    await out(`batch ${r.id}: ${r.status} (${c.cancelled} cancelled, ${c.completed} completed, ${c.failed} failed, ${c.total - c.completed - c.failed - c.cancelled} still running)\n`);
    return 0;
  } finally {
    await client.close();
  }
}
