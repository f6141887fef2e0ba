/**
 * `batchgen <command> [...]`: runs a command of the table (commands.ts). Any failure ends the command
 * with one line, `batchgen <command>: error [<code>]: <message>`, on stderr and exit status 1 (2 for
 * a usage error); BATCHGEN_DEBUG=1 adds the stack.
 */
import { COMMANDS, packageVersion, usage } from './commands.js';
import { redisFlagsHelp } from './common.js';
import { checkLogLevel, describeFailure, failureText } from './failure.js';

const debug = (): boolean => process.env.BATCHGEN_DEBUG === '1' || process.env.BATCHGEN_DEBUG === 'true';

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage());
    return name ? 0 : 2;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    process.stderr.write(`batchgen: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  // A failure outside the command's own promise chain (an 'error' event nobody listens to) is still one line.
  const fatal = (e: unknown) => {
    process.stderr.write(failureText(name, e, debug()));
    process.exit(1);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  try {
    checkLogLevel(process.env.BATCHGEN_LOG_LEVEL);
    // Producer commands print their own summaries; their logs default to warnings only.
    if (process.env.BATCHGEN_LOG_LEVEL === undefined && !['worker', 'demo', 'autoscale'].includes(name))
      process.env.BATCHGEN_LOG_LEVEL = 'warn';
    const code = await cmd.run(rest);
    if (code === 0 && cmd.redisFlags && (rest.includes('--help') || rest.includes('-h'))) process.stdout.write(redisFlagsHelp());
    return code;
  } catch (e) {
    process.stderr.write(failureText(name, e, debug()));
    return describeFailure(e).exitCode;
  }
}

const code = await main(process.argv.slice(2));
await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
process.exit(code);
