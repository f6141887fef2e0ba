/**
 * `batchgen results BATCH_ID --out FILE [--errors FILE] [--order completion|input]`: exports results
 * (in each request's form; OpenAI error lines for failed OpenAI-form requests) and errors as JSONL.
 * The results file is written to a temporary file and renamed over FILE.
 */
import { parseArgs } from 'node:util';
import { BatchgenError } from '../shared/errors.js';
import { GenerationClient } from '../producer/client.js';
import { writeErrorsFile } from '../producer/jsonl.js';
import { writeResultsInOrder, type ResultsOrder } from '../producer/results-file.js';
import { err, keyspaceFrom, out, REDIS_FLAG_OPTIONS } from './common.js';

const USAGE = `usage: batchgen results BATCH_ID --out FILE [--errors FILE] [--order completion|input] [--redis URL]
Writes the results stored so far (completion order, or input order with --order input); a batch
still running gives what is done. The errors file lists failed, rejected and cancelled requests.`;

export async function resultsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      errors: { type: 'string' },
      order: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      ...REDIS_FLAG_OPTIONS,
    },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1 || !values.out) throw new BatchgenError('invalid_request', `expected BATCH_ID and --out FILE\n${USAGE}`);
  const order = (values.order ?? 'completion') as ResultsOrder;
  if (order !== 'completion' && order !== 'input')
    throw new BatchgenError('invalid_request', `--order ${values.order}: expected completion or input`);
  const client = await GenerationClient.connect({ redisUrl: values.redis, ...keyspaceFrom(values) });
  try {
    const id = positionals[0];
    const rec = await client.batch(id).status();
    const n = await writeResultsInOrder(values.out, id, client.store, order);
    let e = 0;
    if (values.errors) e = await writeErrorsFile(values.errors, await client.batch(id).errors());
    err(`batch ${id} (${rec.status}): ${n} results written to ${values.out}${values.errors ? `, ${e} errors to ${values.errors}` : ''}\n`);
    return 0;
  } finally {
    await client.close();
  }
}
