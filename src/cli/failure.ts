/**
 * What the command line prints when a command fails: one line with a stable code, never a raw stack
 * (the stack only with BATCHGEN_DEBUG=1). Known failures of the platform (a missing file, a port in
 * use, a refused permission), of Redis (a full Redis, a refused login or command, a lost connection)
 * and of the configuration (an unknown log level) each get their own code.
 */
import { pino } from 'pino';
import { BatchgenError, type ErrorCode } from '../shared/errors.js';

export interface Failure {
  code: ErrorCode;
  message: string;
  /** the process exit status: 2 for a usage error, 1 otherwise */
  exitCode: number;
}

/** The log levels BATCHGEN_LOG_LEVEL may name. */
export const LOG_LEVELS: readonly string[] = [...Object.keys(pino.levels.values), 'silent'];

/** Refuses an unknown BATCHGEN_LOG_LEVEL before any logger is made. */
export function checkLogLevel(level: string | undefined): void {
  if (level === undefined || LOG_LEVELS.includes(level)) return;
  throw new BatchgenError('invalid_config', `BATCHGEN_LOG_LEVEL=${level}: unknown log level (expected one of ${LOG_LEVELS.join(', ')})`);
}

const REDIS_REPLY: [RegExp, ErrorCode, string][] = [
  [
    /^OOM\b/,
    'redis_out_of_memory',
    'Redis is out of memory (maxmemory reached, and noeviction refuses writes): free memory, raise maxmemory or delete old batches',
  ],
  [
    /^(NOAUTH|WRONGPASS)\b/,
    'redis_auth_failed',
    'Redis refused the login: give the user and password in the URL (redis://user:password@host:port)',
  ],
  [/^NOPERM\b/, 'redis_permission_denied', "Redis refused a command: this user's ACL does not allow it"],
];

const CONNECTION_RE =
  /Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|Stream isn't writeable|enableOfflineQueue|MaxRetriesPerRequest|EPIPE|ENOTFOUND|EHOSTUNREACH/i;

function firstLine(s: string): string {
  return s.split('\n')[0];
}

/** The one-line description of any error a command can throw. */
export function describeFailure(e: unknown): Failure {
  if (e instanceof BatchgenError) return { code: e.code, message: e.message, exitCode: 1 };
  const err = e as (Error & NodeJS.ErrnoException & { address?: string; port?: number }) | null | undefined;
  const message = typeof err?.message === 'string' ? err.message : String(e);
  const errno = typeof err?.code === 'string' ? err.code : undefined;
  if (errno?.startsWith('ERR_PARSE_ARGS')) return { code: 'invalid_request', message, exitCode: 2 };
  const where = err?.path ? `: ${err.path}` : '';
  switch (errno) {
    case 'ENOENT':
    case 'ENOTDIR':
      return { code: 'file_not_found', message: `no such file or folder${where || `: ${firstLine(message)}`}`, exitCode: 1 };
    case 'EISDIR':
      return { code: 'invalid_request', message: `expected a file, found a folder${where}`, exitCode: 1 };
    case 'EACCES':
    case 'EPERM':
      return { code: 'permission_denied', message: `permission denied${where || `: ${firstLine(message)}`}`, exitCode: 1 };
    case 'EADDRINUSE': {
      const at = err?.port !== undefined ? `${err.address ?? ''}:${err.port}` : firstLine(message);
      return { code: 'port_in_use', message: `port already in use (${at}): choose another port or stop what listens there`, exitCode: 1 };
    }
  }
  for (const [re, code, advice] of REDIS_REPLY) {
    if (re.test(message)) return { code, message: `${advice} (Redis said: ${firstLine(message)})`, exitCode: 1 };
  }
  if (err?.name === 'ReplyError') return { code: 'redis_error', message: `Redis refused a command: ${firstLine(message)}`, exitCode: 1 };
  if (CONNECTION_RE.test(message))
    return { code: 'redis_unavailable', message: `Redis is unavailable: ${firstLine(message)}`, exitCode: 1 };
  if (/^unknown level|^default level:.* must be included in custom levels/.test(message)) {
    return {
      code: 'invalid_config',
      message: `BATCHGEN_LOG_LEVEL: unknown log level (${firstLine(message)}; expected one of ${LOG_LEVELS.join(', ')})`,
      exitCode: 1,
    };
  }
  return { code: 'internal_error', message: `${firstLine(message)} (BATCHGEN_DEBUG=1 shows the stack)`, exitCode: 1 };
}

/** The line printed for a failure of `batchgen <command>`; with `debug` the stack follows it. */
export function failureText(command: string, e: unknown, debug: boolean): string {
  const f = describeFailure(e);
  const stack = debug && e instanceof Error && e.stack ? `${e.stack}\n` : '';
  const hint = f.exitCode === 2 && !(e instanceof BatchgenError) ? ` (see batchgen ${command} --help)` : '';
  return `batchgen ${command}: error [${f.code}]: ${f.message}${hint}\n${stack}`;
}
