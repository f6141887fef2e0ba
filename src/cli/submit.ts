/**
 * `batchgen submit FILE.jsonl [--model NAME=DIR] [--redis URL] [--batch-id ID] [--wait] [--out FILE] [--errors FILE]`
 * Prints the batch id. With --wait: a progress bar on a terminal, then results and errors written.
 */
import { basename } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_BUCKET_POLICY, parseBucketPolicy } from '../shared/buckets.js';
import { BatchgenError } from '../shared/errors.js';
import { parseModelSpecs } from '../shared/models.js';
import { GenerationClient } from '../producer/client.js';
import { readJsonlFile, writeErrorsFile, writeResultsFile } from '../producer/jsonl.js';
import { err, formatDuration, keyspaceFrom, numberFlag, out, progressBar, REDIS_FLAG_OPTIONS } from './common.js';
import type { BatchRecord } from '../shared/batch-store.js';

const USAGE = `usage: batchgen submit FILE.jsonl [--model NAME=DIR ...] [--redis URL] [--batch-id ID] [--wait]
                      [--out FILE] [--errors FILE] [--buckets pow2|multiple:K|16,32,64]
                      [--new-token-buckets POLICY] [--attempts 3] [--retention SECONDS] [--timeout SECONDS]
Validates, tokenizes and enqueues the requests of FILE (native or OpenAI /v1/completions lines) and
prints the batch id. Lines that fail go to the errors file with their line number. With --wait it
shows progress and writes the results (in each line's form) to --out (default BATCH_ID.results.jsonl).
Submitting the same file with the same --batch-id again enqueues nothing new.`;

export async function submitCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string', multiple: true },
      'batch-id': { type: 'string' },
      wait: { type: 'boolean' },
      out: { type: 'string' },
      errors: { type: 'string' },
      buckets: { type: 'string' },
      'new-token-buckets': { type: 'string' },
      attempts: { type: 'string' },
      retention: { type: 'string' },
      timeout: { type: 'string' },
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
  if (positionals.length !== 1) throw new BatchgenError('invalid_request', `expected one FILE.jsonl\n${USAGE}`);
  const file = positionals[0];
  const models = parseModelSpecs(values.model ?? []);
  const timeoutS = numberFlag('timeout', values.timeout, { min: 0 });
  const client = await GenerationClient.connect({
    redisUrl: values.redis,
    ...keyspaceFrom(values),
    models,
    buckets: {
      prompt: values.buckets ? parseBucketPolicy(values.buckets) : DEFAULT_BUCKET_POLICY,
      newTokens: values['new-token-buckets'] ? parseBucketPolicy(values['new-token-buckets']) : DEFAULT_BUCKET_POLICY,
    },
    attempts: numberFlag('attempts', values.attempts, { min: 1, integer: true }),
    retentionS: numberFlag('retention', values.retention, { min: 1, integer: true }),
  });
  try {
    const t0 = Date.now();
    const handle = await client.submitLines(readJsonlFile(file), { batchId: values['batch-id'], input: basename(file) });
    const report = handle.report!;
    await out(`${handle.id}\n`);
    err(`submitted ${report.requests} requests (${report.enqueued} enqueued${report.requests - report.enqueued > 0 ? `, ${report.requests - report.enqueued} already queued, done or failed` : ''}) to ${report.keys.length} queue(s); ${report.errors.length} line(s) rejected or invalid\n`);
    if (!values.wait) {
      if (values.errors) await writeErrorsFile(values.errors, report.errors);
      else for (const e of report.errors.slice(0, 10)) err(`  line ${e.line}: ${e.error.code}: ${e.error.message}\n`);
      return 0;
    }
    const tty = process.stderr.isTTY === true;
    let lastLine = 0;
    const show = (r: BatchRecord) => {
      const done = r.counts.completed + r.counts.failed;
      const rate = done / Math.max(0.001, (Date.now() - t0) / 1000);
      const text = `${progressBar(done, r.counts.total)} ${r.status}${r.counts.failed ? `, ${r.counts.failed} failed` : ''} ${rate.toFixed(1)} req/s`;
      if (tty) process.stderr.write(`\r${text}\x1b[K`);
      else if (Date.now() - lastLine > 5000 || ['completed', 'cancelled', 'failed'].includes(r.status)) {
        lastLine = Date.now();
        err(`${text}\n`);
      }
    };
    const rec = await handle.wait({ onProgress: show, timeoutMs: timeoutS === undefined ? undefined : timeoutS * 1000 });
    if (tty) err('\n');
    const outFile = values.out ?? `${handle.id}.results.jsonl`;
    const n = await writeResultsFile(outFile, handle.id, handle.results());
    const errors = await handle.errors();
    const errFile = values.errors ?? (errors.length ? `${handle.id}.errors.jsonl` : undefined);
    if (errFile) await writeErrorsFile(errFile, errors);
    err(
      `batch ${handle.id} ${rec.status} in ${formatDuration(Date.now() - t0)}: ${rec.counts.completed} completed, ${rec.counts.failed} failed` +
        `${rec.counts.cancelled ? `, ${rec.counts.cancelled} cancelled` : ''}; ${n} results in ${outFile}${errFile ? `, ${errors.length} errors in ${errFile}` : ''}\n`,
    );
    return rec.status === 'completed' ? 0 : 1;
  } finally {
    await client.close();
  }
}
