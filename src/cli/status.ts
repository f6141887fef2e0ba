/** `batchgen status BATCH_ID [--json]`: the batch's status and counts (--json: an OpenAI-style batch object). */
import { parseArgs } from 'node:util';
import { BatchgenError } from '../shared/errors.js';
import { toOpenAIBatch } from '../shared/output.js';
import { GenerationClient } from '../producer/client.js';
import { keyspaceFrom, out, REDIS_FLAG_OPTIONS, REDIS_FLAGS_USAGE } from './common.js';
import { watchBatch } from './watch.js';

const USAGE = `usage: batchgen status BATCH_ID [--json] [--watch] ${REDIS_FLAGS_USAGE}
--watch: refresh every second until the batch is finished (one line rewritten in place on a
terminal, else a line per change; on stderr with --json), then print the status.`;

const when = (ms: number | null) => (ms === null ? '-' : new Date(ms).toISOString());

export async function statusCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean' }, watch: { type: 'boolean' }, help: { type: 'boolean', short: 'h' }, ...REDIS_FLAG_OPTIONS },
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
    if (values.watch) {
      // with --json the watch lines go to stderr, so that stdout stays one JSON object
      const stream = values.json ? process.stderr : process.stdout;
      const write = (t: string) => new Promise<void>((res) => stream.write(t, () => res()));
      await watchBatch(client.batch(positionals[0]), { write, tty: stream.isTTY === true });
    }
    const r = await client.batch(positionals[0]).status();
    if (values.json) {
      await out(`${JSON.stringify(toOpenAIBatch(r, await client.store.inputErrors(r.id)))}\n`);
    } else {
      const c = r.counts;
      await out(
        `batch ${r.id}: ${r.status}\n` +
          `  requests: ${c.total} total, ${c.completed} completed, ${c.failed} failed, ${c.cancelled} cancelled, ${c.total - c.completed - c.failed - c.cancelled} pending` +
          `${c.rejected ? `; ${c.rejected} line(s) rejected` : ''}\n` +
          `  created ${when(r.created_at)}, in progress ${when(r.in_progress_at)}, completed ${when(r.completed_at)}` +
          `${r.cancelled_at ? `, cancelled ${when(r.cancelled_at)}` : ''}${r.expires_at ? `, expires ${when(r.expires_at)}` : ''}\n`,
      );
      for (const d of await client.batch(r.id).health()) {
        if (d.state !== 'held') await out(`  key ${d.key}: ${d.pending} pending, ${d.state}: ${d.reason}\n`);
      }
    }
    return 0;
  } finally {
    await client.close();
  }
}
