/** The command table of `batchgen`: each command is `(argv) => Promise<exit code>`, with one line of help. */
import { readFileSync } from 'node:fs';
import { autoscaleCommand } from './autoscale.js';
import { cancelCommand } from './cancel.js';
import { deleteCommand } from './delete.js';
import { demoCommand } from './demo.js';
import { generateCommand } from './generate.js';
import { listCommand } from './list.js';
import { makeModelCommand } from './make-model.js';
import { planBucketsCommand } from './plan-buckets.js';
import { resultsCommand } from './results.js';
import { statusCommand } from './status.js';
import { submitCommand } from './submit.js';
import { workerCommand } from './worker.js';

/** `redisFlags`: the command takes REDIS_FLAG_OPTIONS (their help is added to its --help). */
export type Command = { run: (argv: string[]) => Promise<number>; help: string; redisFlags?: true };

export const COMMANDS: Record<string, Command> = {
  generate: { run: generateCommand, help: 'generate in-process from a model folder (no Redis)' },
  'make-model': { run: makeModelCommand, help: 'write a small GPT-2 model folder with random weights' },
  worker: { run: workerCommand, help: 'serve the queues of compile keys with warm compiled variants', redisFlags: true },
  submit: { run: submitCommand, help: 'submit a JSONL batch (--wait: progress, then results)', redisFlags: true },
  status: { run: statusCommand, help: "a batch's status and counts (--json: OpenAI-style object; --watch: follow it)", redisFlags: true },
  results: { run: resultsCommand, help: "export a batch's results (and errors) as JSONL", redisFlags: true },
  cancel: { run: cancelCommand, help: "cancel a batch's waiting requests", redisFlags: true },
  list: { run: listCommand, help: 'the batches kept in Redis, newest first, with status and counts', redisFlags: true },
  delete: { run: deleteCommand, help: 'remove a batch: its records, results, errors and jobs left in its queues', redisFlags: true },
  autoscale: {
    run: autoscaleCommand,
    help: 'start and stop workers and assign them compile keys, from the queues and heartbeats',
    redisFlags: true,
  },
  'plan-buckets': { run: planBucketsCommand, help: "propose prompt buckets for a JSONL's lengths" },
  demo: { run: demoCommand, help: 'the whole system on one machine: Redis, two workers, a sample batch' },
};

export function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.help}`);
  return (
    `usage: batchgen <command> [options]   (batchgen <command> --help for a command's options)\n` +
    `       batchgen --version\n\n${lines.join('\n')}\n\n` +
    `REDIS_URL and BATCHGEN_MODELS (name=dir,name=dir) stand in for --redis and --model.\n` +
    `BATCHGEN_LOG_LEVEL sets the log level; BATCHGEN_DEBUG=1 adds the stack to an error.\n`
  );
}

/** The version in package.json. */
export function packageVersion(): string {
  // dist/src/cli/commands.js → the project root
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}
