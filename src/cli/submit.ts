/**
 * `batchgen submit FILE.jsonl [--model NAME=DIR] [--redis URL] [--batch-id ID] [--wait] [--out FILE] [--errors FILE]`
 * Prints the batch id. With --wait: progress, results appended to the results file as they complete,
 * then the errors file.
 */
import { basename, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_BUCKET_POLICY, parseBucketPolicy } from '../shared/buckets.js';
import { BatchgenError } from '../shared/errors.js';
import { checkBatchId } from '../shared/keys.js';
import { parseModelSpecs } from '../shared/models.js';
import { type BatchHandle, isTerminal } from '../producer/batch-handle.js';
import type { ErrorRecord } from '../shared/schemas.js';
import { GenerationClient } from '../producer/client.js';
import { newBatchId, type SubmitReport } from '../producer/submission.js';
import { openJsonlInput, writeErrorsFile } from '../producer/jsonl.js';
import { ResultsFileAppender, writeResultsInOrder, type ResultsOrder } from '../producer/results-file.js';
import type { BatchRecord } from '../shared/batch-store.js';
import { err, formatDuration, keyspaceFrom, numberFlag, out, REDIS_FLAG_OPTIONS } from './common.js';
import { ProgressReporter } from './progress.js';

const USAGE = `usage: batchgen submit FILE.jsonl [--model NAME=DIR ...] [--redis URL] [--batch-id ID] [--wait]
                      [--out FILE] [--errors FILE] [--order completion|input] [--fail-on-errors]
                      [--buckets pow2|multiple:K|16,32,64] [--new-token-buckets POLICY] [--attempts 3]
                      [--retention SECONDS] [--timeout SECONDS]
Validates, tokenizes and enqueues the requests of FILE (native or OpenAI /v1/completions lines) and
prints the batch id. Lines that fail go to the errors file with their line number. With --wait it
shows progress and appends the results (in each line's form) to --out (default BATCH_ID.results.jsonl)
as they complete; --order input rewrites that file in input order once the batch is finished.
Submitting the same file with the same --batch-id again enqueues nothing new (this is also how an
interrupted submit resumes); a custom_id resubmitted with other content is an idempotency_conflict.
Exit status: 0 done; 1 an error, a batch not completed, a timeout, or lines refused (conflicts, or
new lines for a finished batch); 2 bad usage (no model, a bad flag); 3 with --fail-on-errors, when
any request failed or any line was rejected.`;

/** The summary line of a submission: each counted request in one bucket. */
export function submitSummary(r: SubmitReport): string {
  const parts = [`${r.enqueued} enqueued`];
  if (r.alreadyPresent) parts.push(`${r.alreadyPresent} already present`);
  if (r.failedValidation) parts.push(`${r.failedValidation} failed validation`);
  if (r.conflicts) parts.push(`${r.conflicts} conflicting with stored content (idempotency_conflict)`);
  if (r.refused) parts.push(`${r.refused} refused: the batch is ${r.status} (batch_finished)`);
  return `batch ${r.batchId}: ${r.requests} requests (${parts.join(', ')}) on ${r.keys.length} queue(s); ${r.rejectedLines} line(s) rejected`;
}

const OPTIONS = {
  model: { type: 'string', multiple: true },
  'batch-id': { type: 'string' },
  wait: { type: 'boolean' },
  out: { type: 'string' },
  errors: { type: 'string' },
  order: { type: 'string' },
  'fail-on-errors': { type: 'boolean' },
  buckets: { type: 'string' },
  'new-token-buckets': { type: 'string' },
  attempts: { type: 'string' },
  retention: { type: 'string' },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  ...REDIS_FLAG_OPTIONS,
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>['values'];

/** The client of a submit: models, buckets, attempts, retention, and the outage messages of --wait. */
function connectClient(values: Values, models: ReturnType<typeof parseModelSpecs>): Promise<GenerationClient> {
  return GenerationClient.connect({
    redisUrl: values.redis,
    ...keyspaceFrom(values),
    models,
    buckets: {
      prompt: values.buckets ? parseBucketPolicy(values.buckets) : DEFAULT_BUCKET_POLICY,
      newTokens: values['new-token-buckets'] ? parseBucketPolicy(values['new-token-buckets']) : DEFAULT_BUCKET_POLICY,
    },
    attempts: numberFlag('attempts', values.attempts, { min: 1, integer: true }),
    retentionS: numberFlag('retention', values.retention, { min: 1, integer: true }),
    // --wait rides out a Redis restart or failover: told once when Redis goes, once when it is back
    onOutage: (e) =>
      err(
        e.state === 'down'
          ? `Redis at ${e.url} is unavailable (${e.error.split('\n')[0].replace(/^Redis at \S+ is unavailable: /, '')}): waiting for it, for up to ${formatDuration(e.limitMs)}\n`
          : `Redis at ${e.url} is back after ${formatDuration(e.downMs)}: going on\n`,
      ),
  });
}

export async function submitCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: OPTIONS,
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
  if (models.length === 0) {
    err('batchgen submit: no model: pass --model NAME=DIR (or set BATCHGEN_MODELS=name=dir,...)\n');
    return 2;
  }
  const order = (values.order ?? 'completion') as ResultsOrder;
  if (order !== 'completion' && order !== 'input')
    throw new BatchgenError('invalid_request', `--order ${values.order}: expected completion or input`);
  const timeoutS = numberFlag('timeout', values.timeout, { min: 0 });
  const batchId = checkBatchId(values['batch-id'] ?? newBatchId());
  // the input is opened (and its first line read) before anything is written to Redis
  const lines = await openJsonlInput(file);
  const client = await connectClient(values, models);
  const onInterruptSubmit = () => {
    err(
      `\ninterrupted: batch ${batchId} is only partly submitted (it stays validating, and expires after its retention if left so).\n` +
        `resume with: batchgen submit ${file} --batch-id ${batchId} (requests already recorded are not enqueued again)\n`,
    );
    process.exit(130);
  };
  process.once('SIGINT', onInterruptSubmit);
  try {
    const t0 = Date.now();
    const handle = await client.submitLines(lines, { batchId, input: basename(file) });
    process.removeListener('SIGINT', onInterruptSubmit);
    const report = handle.report!;
    await out(`${handle.id}\n`);
    err(`${submitSummary(report)}\n`);
    const refusedLines = report.conflicts + report.refused;
    const refusals = report.errors.filter((e) => e.error.code === 'idempotency_conflict' || e.error.code === 'batch_finished');
    if (!values.wait) {
      if (values.errors) await writeErrorsFile(values.errors, report.errors);
      else for (const e of report.errors.slice(0, 10)) err(`  line ${e.line}: ${e.error.code}: ${e.error.message}\n`);
      if (refusedLines) return 1;
      return values['fail-on-errors'] && report.failedValidation + report.rejectedLines > 0 ? 3 : 0;
    }

    return await waitAndWrite(client, handle, values, { t0, order, timeoutS, refusals, refusedLines });
  } finally {
    process.removeListener('SIGINT', onInterruptSubmit);
    await client.close();
  }
}

/** `--wait`: progress, results appended as requests settle, then the errors file and the summary. Returns the exit code. */
async function waitAndWrite(
  client: GenerationClient,
  handle: BatchHandle,
  values: Values,
  w: { t0: number; order: ResultsOrder; timeoutS: number | undefined; refusals: ErrorRecord[]; refusedLines: number },
): Promise<number> {
  const { t0, order, timeoutS, refusals, refusedLines } = w;
  const outFile = values.out ?? `${handle.id}.results.jsonl`;
  const appender = await ResultsFileAppender.open(outFile, handle.id, client.store);
  if (appender.kept) err(`${outFile}: ${appender.kept} result line(s) of this batch kept from before; appending the rest\n`);
  const onInterruptWait = () => {
    err(
      `\nstopped waiting: batch ${handle.id} keeps running. ${appender.lines} line(s) so far in ${outFile}.\nlater: batchgen status ${handle.id}; batchgen results ${handle.id} --out FILE\n`,
    );
    process.exit(130);
  };
  process.once('SIGINT', onInterruptWait);

  const progress = new ProgressReporter(t0);
  const onProgress = (r: BatchRecord) => progress.update(r, isTerminal(r.status));
  let stop = false;
  const follow = (async () => {
    while (!stop) {
      await client.patient(() => appender.catchUp());
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  let rec: BatchRecord | null = null;
  try {
    rec = await handle.wait({ onProgress, timeoutMs: timeoutS === undefined ? undefined : timeoutS * 1000 });
  } catch (e) {
    if (!(e instanceof BatchgenError) || timeoutS === undefined || Date.now() - t0 < timeoutS * 1000) throw e;
  } finally {
    progress.stop();
    stop = true;
    await follow;
    await client.patient(() => appender.catchUp());
    await appender.close();
    process.removeListener('SIGINT', onInterruptWait);
  }
  if (rec === null) {
    const r = await handle.status();
    err(
      `batch ${handle.id} is not finished after --timeout ${timeoutS} s (${r.counts.completed + r.counts.failed}/${r.counts.total} done): it keeps running. ` +
        `${appender.lines} line(s) so far in ${outFile}.\nlater: batchgen status ${handle.id}; batchgen results ${handle.id} --out FILE\n`,
    );
    return 1;
  }
  const n = order === 'input' ? await client.patient(() => writeResultsInOrder(outFile, handle.id, client.store, 'input')) : appender.lines;
  const errors = [...(await handle.errors()), ...refusals].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  const errFile = values.errors ?? (errors.length ? `${handle.id}.errors.jsonl` : undefined);
  if (errFile) await writeErrorsFile(errFile, errors);
  if (refusedLines === 0)
    await client.patient(() =>
      client.store.setFiles(handle.id, { output: resolve(outFile), errors: errFile ? resolve(errFile) : undefined }),
    );
  err(
    `batch ${handle.id} ${rec.status} in ${formatDuration(Date.now() - t0)}: ${rec.counts.completed} completed, ${rec.counts.failed} failed` +
      `${rec.counts.cancelled ? `, ${rec.counts.cancelled} cancelled` : ''}; ${n} lines in ${outFile}${errFile ? `, ${errors.length} errors in ${errFile}` : ''}\n`,
  );
  if (rec.status !== 'completed' || refusedLines) return 1;
  return values['fail-on-errors'] && rec.counts.failed + rec.counts.rejected > 0 ? 3 : 0;
}
