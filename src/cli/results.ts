/** `batchgen results BATCH_ID --out FILE [--errors FILE]`: exports results (in each request's form) and errors as JSONL. */
import { parseArgs } from 'node:util';
import { BatchgenError } from '../shared/errors.js';
import { GenerationClient } from '../producer/client.js';
import { writeErrorsFile, writeResultsFile } from '../producer/jsonl.js';
import type { ResultRecord } from '../shared/schemas.js';
import { err, keyspaceFrom, out, REDIS_FLAG_OPTIONS } from './common.js';

const USAGE = `usage: batchgen results BATCH_ID --out FILE [--errors FILE] [--redis URL]
Writes the results stored so far (completion order); a batch still running gives what is done.`;

export async function resultsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { out: { type: 'string' }, errors: { type: 'string' }, help: { type: 'boolean', short: 'h' }, ...REDIS_FLAG_OPTIONS },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1 || !values.out) throw new BatchgenError('invalid_request', `expected BATCH_ID and --out FILE\n${USAGE}`);
  const client = await GenerationClient.connect({ redisUrl: values.redis, ...keyspaceFrom(values) });
  try {
    const id = positionals[0];
    const rec = await client.batch(id).status();
    async function* all(): AsyncGenerator<ResultRecord> {
      for await (const chunk of client.store.results(id)) yield* chunk;
    }
    const n = await writeResultsFile(values.out, id, all());
    let e = 0;
    if (values.errors) e = await writeErrorsFile(values.errors, await client.batch(id).errors());
    err(`batch ${id} (${rec.status}): ${n} results written to ${values.out}${values.errors ? `, ${e} errors to ${values.errors}` : ''}\n`);
    return 0;
  } finally {
    await client.close();
  }
}
