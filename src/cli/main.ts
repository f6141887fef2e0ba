/**
 * `batchgen <command> [...]`: the command table. Each command is `(argv) => Promise<exit code>`.
 * A BatchgenError ends the command with its code and message on stderr and exit status 1.
 */
import { BatchgenError } from '../shared/errors.js';
import { cancelCommand } from './cancel.js';
import { demoCommand } from './demo.js';
import { generateCommand } from './generate.js';
import { makeModelCommand } from './make-model.js';
import { planBucketsCommand } from './plan-buckets.js';
import { resultsCommand } from './results.js';
import { statusCommand } from './status.js';
import { submitCommand } from './submit.js';
import { workerCommand } from './worker.js';

type Command = { run: (argv: string[]) => Promise<number>; help: string };

export const COMMANDS: Record<string, Command> = {
  generate: { run: generateCommand, help: 'generate in-process from a model folder (no Redis)' },
  'make-model': { run: makeModelCommand, help: 'write a small GPT-2 model folder with random weights' },
  worker: { run: workerCommand, help: 'serve the queues of compile keys with warm compiled variants' },
  submit: { run: submitCommand, help: 'submit a JSONL batch (--wait: progress, then results)' },
  status: { run: statusCommand, help: "a batch's status and counts (--json: OpenAI-style object)" },
  results: { run: resultsCommand, help: "export a batch's results (and errors) as JSONL" },
  cancel: { run: cancelCommand, help: "cancel a batch's waiting requests" },
  'plan-buckets': { run: planBucketsCommand, help: "propose prompt buckets for a JSONL's lengths" },
  demo: { run: demoCommand, help: 'the whole system on one machine: Redis, two workers, a sample batch' },
};

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.help}`);
  return `usage: batchgen <command> [options]   (batchgen <command> --help for a command's options)\n\n${lines.join('\n')}\n\nREDIS_URL and BATCHGEN_MODELS (name=dir,name=dir) stand in for --redis and --model.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`batchgen: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  // Producer commands print their own summaries; their logs default to warnings only.
  if (process.env.BATCHGEN_LOG_LEVEL === undefined && !['worker', 'demo'].includes(name)) process.env.BATCHGEN_LOG_LEVEL = 'warn';
  try {
    return await cmd.run(rest);
  } catch (e) {
    if (e instanceof BatchgenError) {
      process.stderr.write(`batchgen ${name}: error [${e.code}]: ${e.message}\n`);
      return 1;
    }
    if (e instanceof TypeError && (e as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`batchgen ${name}: ${e.message} (see batchgen ${name} --help)\n`);
      return 2;
    }
    process.stderr.write(`batchgen ${name}: ${(e as Error)?.stack ?? String(e)}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
process.exit(code);
