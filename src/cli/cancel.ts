/** `batchgen cancel BATCH_ID`: removes the batch's waiting jobs (in chunks, with progress on stderr); running ones finish. */
import { parseArgs } from 'node:util';
import { BatchgenError } from '../shared/errors.js';
import { GenerationClient, type CancelProgress } from '../producer/client.js';
import { err, keyspaceFrom, out, progressBar, progressWrite, REDIS_FLAG_OPTIONS, REDIS_FLAGS_USAGE } from './common.js';

export const CANCEL_OPTIONS = { help: { type: 'boolean', short: 'h' }, ...REDIS_FLAG_OPTIONS } as const;

const USAGE = `usage: batchgen cancel BATCH_ID ${REDIS_FLAGS_USAGE}
Moves the batch to cancelling and removes its waiting jobs, 500 requests at a time, showing progress
on stderr; requests running on a worker finish, then the batch is cancelled.`;

/** The progress line of a cancel. */
export function cancelProgressLine(id: string, p: CancelProgress): string {
  return `cancelling ${id}: ${progressBar(p.scanned, p.total)} requests looked at, ${p.removed} waiting job(s) removed`;
}

export async function cancelCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: CANCEL_OPTIONS, strict: true, allowPositionals: true });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new BatchgenError('invalid_request', `expected one BATCH_ID\n${USAGE}`);
  const client = await GenerationClient.connect({ redisUrl: values.redis, ...keyspaceFrom(values) });
  const tty = process.stderr.isTTY === true;
  let shown: string | null = null;
  try {
    const r = await client.cancel(positionals[0], {
      onProgress: (p) => {
        const line = cancelProgressLine(positionals[0], p);
        err(progressWrite(shown, line, tty));
        shown = line;
      },
    });
    if (tty && shown !== null) err('\n');
    const c = r.counts;
    await out(
      `batch ${r.id}: ${r.status} (${c.cancelled} cancelled, ${c.completed} completed, ${c.failed} failed, ${c.total - c.completed - c.failed - c.cancelled} still running)\n`,
    );
    return 0;
  } finally {
    await client.close();
  }
}
