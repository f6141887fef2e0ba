/**
 * `batchgen plan-buckets FILE.jsonl --model DIR [--max-buckets K] [--json]`: reads the prompt lengths of
 * a JSONL (tokenized with the model's tokenizer), proposes at most K prompt buckets that minimize
 * padded tokens, and prints the padding waste of that plan against powers of two.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_BUCKET_POLICY, formatBucketPolicy } from '../shared/buckets.js';
import { BatchgenError } from '../shared/errors.js';
import { loadModelInfo, parseModelSpecs } from '../shared/models.js';
import { parseRequestLine } from '../shared/requests.js';
import { bucketFor } from '../shared/buckets.js';
import { planBuckets, policyPadding } from '../producer/bucket-plan.js';
import { readJsonlFile } from '../producer/jsonl.js';
import { numberFlag, out } from './common.js';

const USAGE = `usage: batchgen plan-buckets FILE.jsonl --model DIR [--max-buckets K] [--json]
Proposes at most K prompt buckets (default 4) minimizing padded prompt tokens for the prompts of
FILE, and compares the padding waste with powers of two. Use the plan with submit --buckets LIST.`;

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export async function planBucketsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { model: { type: 'string' }, 'max-buckets': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1 || !values.model) throw new BatchgenError('invalid_request', `expected FILE.jsonl and --model DIR\n${USAGE}`);
  const k = numberFlag('max-buckets', values['max-buckets'], { min: 1, integer: true }) ?? 4;
  const [spec] = parseModelSpecs([values.model]);
  const model = await loadModelInfo(spec);
  const lengths: number[] = [];
  let skipped = 0;
  let tooLong = 0;
  for await (const l of readJsonlFile(positionals[0])) {
    const p = parseRequestLine(l.text, l.line);
    if (!p.ok) {
      skipped += 1;
      continue;
    }
    const n = typeof p.request.prompt === 'string' ? (await model.tokenizer.encode(p.request.prompt)).length : p.request.prompt.length;
    if (n < 1) skipped += 1;
    else if (n > model.contextLength) tooLong += 1;
    else lengths.push(n);
  }
  if (lengths.length === 0) throw new BatchgenError('invalid_request', `no usable prompt in ${positionals[0]} (${skipped} lines skipped)`);
  const plan = planBuckets(lengths, k);
  const pow2 = policyPadding(lengths, DEFAULT_BUCKET_POLICY, model.contextLength);
  const pow2Buckets = [...new Set(lengths.map((n) => bucketFor(n, DEFAULT_BUCKET_POLICY, model.contextLength)!))].sort((a, b) => a - b);
  const mean = lengths.reduce((s, n) => s + n, 0) / lengths.length;
  if (values.json) {
    await out(
      `${JSON.stringify({
        prompts: lengths.length,
        skipped_lines: skipped,
        too_long: tooLong,
        min: Math.min(...lengths),
        max: Math.max(...lengths),
        mean,
        plan: { buckets: plan.buckets, real_tokens: plan.real, padded_tokens: plan.padded, waste: plan.waste },
        pow2: { policy: formatBucketPolicy(DEFAULT_BUCKET_POLICY), buckets: pow2Buckets, real_tokens: pow2.real, padded_tokens: pow2.padded, waste: pow2.waste },
      })}\n`,
    );
    return 0;
  }
  const saved = pow2.padded - plan.padded;
  await out(
    `prompts: ${lengths.length} (${Math.min(...lengths)} to ${Math.max(...lengths)} tokens, mean ${mean.toFixed(1)})` +
      `${skipped ? `; ${skipped} line(s) skipped` : ''}${tooLong ? `; ${tooLong} longer than the context` : ''}\n\n` +
      `  plan                      buckets                        padded tokens   padding waste\n` +
      `  ${`best ${plan.buckets.length} (max ${k})`.padEnd(26)}${plan.buckets.join(',').padEnd(31)}${String(plan.padded).padStart(13)}   ${pct(plan.waste).padStart(13)}\n` +
      `  ${'powers of two from 16'.padEnd(26)}${pow2Buckets.join(',').padEnd(31)}${String(pow2.padded).padStart(13)}   ${pct(pow2.waste).padStart(13)}\n\n` +
      `the plan pads ${saved >= 0 ? `${saved} fewer` : `${-saved} more`} prompt tokens than powers of two.\n` +
      `use it with: batchgen submit FILE --buckets ${plan.buckets.join(',')}${plan.buckets[plan.buckets.length - 1] < model.contextLength ? `,${model.contextLength}` : ''}\n`,
  );
  return 0;
}
