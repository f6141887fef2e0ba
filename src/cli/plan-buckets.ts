/**
 * `batchgen plan-buckets FILE.jsonl --model DIR [--max-buckets K] [--new-token-buckets POLICY] [--json]`:
 * reads the prompt lengths and max_new_tokens of a JSONL (tokenized with the model's tokenizer),
 * proposes at most K prompt buckets that minimize padded tokens, and prints the compile keys and
 * padding waste of that plan against powers of two. Keys are computed as submit computes them, so
 * every proposed key is servable (prompt bucket + new-token bucket ≤ the context).
 */
import { parseArgs } from 'node:util';
import { DEFAULT_BUCKET_POLICY, formatBucketPolicy, parseBucketPolicy } from '../shared/buckets.js';
import { BatchgenError } from '../shared/errors.js';
import { loadModelInfo } from '../model/info.js';
import { parseModelSpecs } from '../shared/models.js';
import { resolveParams } from '../shared/params.js';
import { parseRequestLine } from '../shared/requests.js';
import { planBuckets, servableKeys, type PlannedRequest } from '../producer/bucket-plan.js';
import { promptIdsOf, requestParams } from '../producer/prepare.js';
import { readJsonlFile } from '../producer/jsonl.js';
import { numberFlag, out } from './common.js';

const USAGE = `usage: batchgen plan-buckets FILE.jsonl --model DIR [--max-buckets K] [--new-token-buckets POLICY] [--json]
Proposes at most K prompt buckets (default 4) minimizing padded prompt tokens for the prompts of
FILE, and compares the padding waste with powers of two. Use the plan with submit --buckets LIST.
Near the context a key's prompt (or new-token) bucket is capped so that it fits: keys show P+N.`;

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const keysText = (keys: { P: number; N: number }[]) => keys.map((k) => `${k.P}+${k.N}`).join(',');

export async function planBucketsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      'max-buckets': { type: 'string' },
      'new-token-buckets': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 1 || !values.model)
    throw new BatchgenError('invalid_request', `expected FILE.jsonl and --model DIR\n${USAGE}`);
  const k = numberFlag('max-buckets', values['max-buckets'], { min: 1, integer: true }) ?? 4;
  const newTokens = values['new-token-buckets'] ? parseBucketPolicy(values['new-token-buckets']) : DEFAULT_BUCKET_POLICY;
  const [spec] = parseModelSpecs([values.model]);
  const model = await loadModelInfo(spec);
  const ctx = model.contextLength;
  const requests: PlannedRequest[] = [];
  let skipped = 0;
  let tooLong = 0;
  for await (const l of readJsonlFile(positionals[0])) {
    const p = parseRequestLine(l.text, l.line);
    if (!p.ok) {
      skipped += 1;
      continue;
    }
    // token lengths as submit computes them: a chat line's is that of its rendered template
    let maxNew: number;
    let n: number;
    try {
      n = (await promptIdsOf(p.request, model)).length;
      maxNew = resolveParams(requestParams(p.request, model, n), model.defaults, () => 0).max_new_tokens;
    } catch {
      skipped += 1;
      continue;
    }
    if (n < 1) skipped += 1;
    else if (n + maxNew > ctx) tooLong += 1;
    else requests.push({ prompt: n, maxNew });
  }
  if (requests.length === 0)
    throw new BatchgenError(
      'invalid_request',
      `no usable prompt in ${positionals[0]} (${skipped} lines skipped, ${tooLong} longer than the context)`,
    );
  const lengths = requests.map((r) => r.prompt);
  const plan = planBuckets(lengths, k);
  const planned = servableKeys(requests, ctx, { kind: 'list', sizes: plan.buckets }, newTokens);
  const pow2 = servableKeys(requests, ctx, DEFAULT_BUCKET_POLICY, newTokens);
  const mean = lengths.reduce((s, n) => s + n, 0) / lengths.length;
  if (values.json) {
    await out(
      `${JSON.stringify({
        prompts: requests.length,
        skipped_lines: skipped,
        too_long: tooLong,
        min: Math.min(...lengths),
        max: Math.max(...lengths),
        mean,
        context: ctx,
        new_token_buckets: formatBucketPolicy(newTokens),
        plan: { buckets: plan.buckets, keys: planned.keys, real_tokens: planned.real, padded_tokens: planned.padded, waste: planned.waste },
        pow2: {
          policy: formatBucketPolicy(DEFAULT_BUCKET_POLICY),
          keys: pow2.keys,
          real_tokens: pow2.real,
          padded_tokens: pow2.padded,
          waste: pow2.waste,
        },
      })}\n`,
    );
    return 0;
  }
  const saved = pow2.padded - planned.padded;
  await out(
    `prompts: ${requests.length} (${Math.min(...lengths)} to ${Math.max(...lengths)} tokens, mean ${mean.toFixed(1)})` +
      `${skipped ? `; ${skipped} line(s) skipped` : ''}${tooLong ? `; ${tooLong} longer than the context` : ''}\n\n` +
      `  plan                      compile keys (prompt+new)      padded tokens   padding waste\n` +
      `  ${`best ${plan.buckets.length} (max ${k})`.padEnd(26)}${keysText(planned.keys).padEnd(31)}${String(planned.padded).padStart(13)}   ${pct(planned.waste).padStart(13)}\n` +
      `  ${'powers of two from 16'.padEnd(26)}${keysText(pow2.keys).padEnd(31)}${String(pow2.padded).padStart(13)}   ${pct(pow2.waste).padStart(13)}\n\n` +
      `the plan pads ${saved >= 0 ? `${saved} fewer` : `${-saved} more`} prompt tokens than powers of two.\n` +
      `use it with: batchgen submit FILE --buckets ${plan.buckets.join(',')}` +
      `${values['new-token-buckets'] ? ` --new-token-buckets ${formatBucketPolicy(newTokens)}` : ''}\n` +
      `(a later prompt longer than ${plan.buckets[plan.buckets.length - 1]} tokens has no bucket in this plan)\n`,
  );
  return 0;
}
