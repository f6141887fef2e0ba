/**
 * One pino root logger per process, a child per component (`child({ component, key })`). Logs go to
 * stderr (stdout belongs to command output such as JSON lines). Level: BATCHGEN_LOG_LEVEL, default
 * `info`; `silent` turns them off.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

let root: Logger | null = null;

export function rootLogger(): Logger {
  if (root === null) {
    root = pino(
      { name: 'batchgen', level: process.env.BATCHGEN_LOG_LEVEL ?? 'info', base: { pid: process.pid } },
      pino.destination({ fd: 2, sync: true }),
    );
  }
  return root;
}

/** Replaces the root logger (tests, or an application that brings its own pino). */
export function setRootLogger(logger: Logger): void {
  root = logger;
}

export function componentLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}
