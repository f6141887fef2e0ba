/** `batchgen list [--json] [--limit N]`: the batches kept in Redis, newest first, with status and counts. */
import { parseArgs } from 'node:util';
import { listBatches } from '../shared/batch-admin.js';
import type { BatchRecord } from '../shared/batch-store.js';
import { BatchgenError } from '../shared/errors.js';
import { toOpenAIBatch } from '../shared/output.js';
import { asRedisError, redisUrlFrom } from '../shared/redis.js';
import { GenerationClient } from '../producer/client.js';
import { keyspaceFrom, numberFlag, out, REDIS_FLAG_OPTIONS, REDIS_FLAGS_USAGE } from './common.js';

export const LIST_OPTIONS = {
  json: { type: 'boolean' },
  limit: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  ...REDIS_FLAG_OPTIONS,
} as const;

const USAGE = `usage: batchgen list [--json] [--limit N] ${REDIS_FLAGS_USAGE}
The batches kept in Redis (not yet expired or deleted), newest first: id, status, request counts
(total, completed, failed, cancelled) and creation time. --json: {"object": "list", "data": [batch
objects as status --json prints them], ...}. --limit N: the newest N only.`;

/** One row of the text listing. */
export function listRow(r: BatchRecord, idWidth: number): string {
  const c = r.counts;
  return `${r.id.padEnd(idWidth)}  ${r.status.padEnd(10)}  ${String(c.total).padStart(7)}  ${String(c.completed).padStart(9)}  ${String(c.failed).padStart(6)}  ${String(c.cancelled).padStart(9)}  ${new Date(r.created_at).toISOString()}`;
}

export function listHeader(idWidth: number): string {
  return `${'ID'.padEnd(idWidth)}  ${'STATUS'.padEnd(10)}  ${'TOTAL'.padStart(7)}  ${'COMPLETED'.padStart(9)}  ${'FAILED'.padStart(6)}  ${'CANCELLED'.padStart(9)}  CREATED`;
}

export async function listCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: LIST_OPTIONS, strict: true, allowPositionals: true });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 0) throw new BatchgenError('invalid_request', `unexpected argument "${positionals[0]}"\n${USAGE}`);
  const limit = numberFlag('limit', values.limit, { min: 1, integer: true });
  const client = await GenerationClient.connect({ redisUrl: values.redis, ...keyspaceFrom(values) });
  try {
    const all: BatchRecord[] = [];
    let headerDone = false;
    for await (const page of listBatches(client.redis, client.keys, { limit })) {
      if (values.json) {
        all.push(...page);
        continue;
      }
      const width = Math.max(24, ...page.map((r) => r.id.length));
      await out(`${headerDone ? '' : `${listHeader(width)}\n`}${page.map((r) => listRow(r, width)).join('\n')}\n`);
      headerDone = true;
    }
    if (values.json) {
      const data = all.map((r) => toOpenAIBatch(r));
      await out(
        `${JSON.stringify({ object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: false })}\n`,
      );
    } else if (!headerDone) {
      await out('no batches\n');
    }
    return 0;
  } catch (e) {
    throw asRedisError(e, redisUrlFrom(values.redis));
  } finally {
    await client.close();
  }
}
