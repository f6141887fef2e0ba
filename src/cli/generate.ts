/**
 * `batchgen generate --model DIR --prompt TEXT [--prompt TEXT ...] [gen flags] [--json]`:
 * in-process, no Redis. The prompts form one padded batch: one variant whose prompt bucket fits the
 * longest prompt, at a batch size of the number of prompts.
 */
import { parseArgs } from 'node:util';
import { GEN_FLAG_OPTIONS, paramsFromFlags } from './gen-flags.js';
import { CompiledVariant, kernelsInfo, loadModel, retraces, tf } from '../compiler/index.js';
import { DEFAULT_BUCKET_POLICY, parseBucketPolicy } from '../shared/buckets.js';
import { compileKeyFor } from '../shared/compile-key.js';
import { BatchgenError } from '../shared/errors.js';
import { resolveParams } from '../shared/params.js';

export const GENERATE_USAGE = `usage: batchgen generate --model DIR --prompt TEXT [--prompt TEXT ...] [--json]
  [--max-new-tokens N] [--do-sample] [--temperature T] [--top-k K] [--top-p P] [--num-beams K]
  [--length-penalty X] [--early-stopping true|false|never] [--repetition-penalty X] [--seed S]
  [--min-new-tokens N] [--no-repeat-ngram-size N] [--stop TEXT ...] [--buckets pow2|multiple:K|16,32,64]
The prompts form one batch under the compile key of the longest (prompt bucket + new-token bucket
≤ the model's context); a prompt that does not fit with --max-new-tokens is an error.`;

export async function generateCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      prompt: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      buckets: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      ...GEN_FLAG_OPTIONS,
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${GENERATE_USAGE}\n`);
    return 0;
  }
  if (!values.model || !values.prompt?.length)
    throw new BatchgenError('invalid_request', `--model and at least one --prompt are required\n${GENERATE_USAGE}`);
  const request = paramsFromFlags(values);
  const policy = values.buckets ? parseBucketPolicy(values.buckets) : DEFAULT_BUCKET_POLICY;

  const model = await loadModel(values.model);
  const params = resolveParams(request, model.defaults);
  const prompts = values.prompt;
  const encoded = await Promise.all(prompts.map((p) => model.folder.tokenizer.encode(p)));
  const longest = Math.max(...encoded.map((e) => e.length));
  const key = compileKeyFor(model.name, longest, params, model.contextLength, policy);
  const variant = await CompiledVariant.compile(model, key, prompts.length);
  const t0 = performance.now();
  const results = await variant.run(encoded.map((promptIds) => ({ promptIds, params })));
  const ms = performance.now() - t0;

  for (let i = 0; i < prompts.length; i++) {
    const r = results[i];
    const text = r.finishReason === 'stop' && r.text !== undefined ? r.text : await model.decode(r.tokenIds);
    if (values.json) {
      const line = { prompt: prompts[i], prompt_token_ids: encoded[i], token_ids: r.tokenIds, text, finish_reason: r.finishReason };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    } else {
      const bold = (x: string) => (process.stdout.isTTY ? `\x1b[1m${x}\x1b[0m` : x);
      process.stdout.write(`${prompts[i]}${bold(text)}\n  (${r.tokenIds.length} tokens, ${r.finishReason})\n`);
    }
  }
  const tokens = results.reduce((n, r) => n + r.tokenIds.length, 0);
  const k = kernelsInfo();
  if (values.json) {
    // --json: the run's meta as one JSON line on stderr (stdout keeps one line per prompt)
    const meta = { backend: tf.getBackend(), kernels: k.kernels, library: k.library, threads: k.threads, variant: variant.id };
    const timing = { compile_ms: Math.round(variant.compileMs), tokens, ms: Math.round(ms), retraces: retraces() };
    process.stderr.write(`${JSON.stringify({ meta: { ...meta, ...timing } })}\n`);
  } else {
    const kernels =
      k.kernels === 'native' ? `native kernels (${k.library}, ${k.threads} thread${k.threads > 1 ? 's' : ''})` : 'stock kernels';
    process.stderr.write(
      `${tf.getBackend()} · ${kernels} · variant ${variant.id} · compile ${variant.compileMs.toFixed(0)} ms · ` +
        `${tokens} tokens in ${ms.toFixed(0)} ms · retraces ${retraces()}\n`,
    );
  }
  variant.dispose();
  model.dispose();
  return 0;
}
