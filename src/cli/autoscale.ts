/**
 * `batchgen autoscale --model NAME=DIR [...] [--driver local|kubernetes] [--min-workers 0]
 * [--max-workers N] [--idle-seconds S] [--target-wait-s W] [--interval-s 5] [--metrics-port P]
 * [--dry-run] [--once] [--json]`
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Autoscaler, AUTOSCALER_DEFAULTS } from '../autoscaler/autoscaler.js';
import type { Driver, DriverContext } from '../autoscaler/drivers/driver.js';
import { LocalDriver } from '../autoscaler/drivers/local.js';
import { DEFAULT_POLICY_SETTINGS } from '../autoscaler/policy-settings.js';
import type { Plan, PolicySettings } from '../autoscaler/types.js';
import { BatchgenError } from '../shared/errors.js';
import { Keyspace } from '../shared/keys.js';
import { parseModelSpecs } from '../shared/models.js';
import { redisUrlFrom } from '../shared/redis.js';
import { componentLogger } from '../observability/logger.js';
import { handleShutdown } from '../worker/shutdown.js';
import { keyspaceFrom, numberFlag, out, REDIS_FLAG_OPTIONS, REDIS_FLAGS_USAGE } from './common.js';

export const AUTOSCALE_OPTIONS = {
  model: { type: 'string', multiple: true },
  driver: { type: 'string' },
  'min-workers': { type: 'string' },
  'max-workers': { type: 'string' },
  'idle-seconds': { type: 'string' },
  'target-wait-s': { type: 'string' },
  'interval-s': { type: 'string' },
  'metrics-port': { type: 'string' },
  'worker-args': { type: 'string' },
  'dry-run': { type: 'boolean' },
  once: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  ...REDIS_FLAG_OPTIONS,
} as const;

const d = DEFAULT_POLICY_SETTINGS;
const USAGE = `usage: batchgen autoscale --model NAME=DIR [--model NAME=DIR ...] [--driver local|kubernetes]
                         [--min-workers ${d.minWorkers}] [--max-workers N] [--idle-seconds S] [--target-wait-s ${d.targetWaitSeconds}]
                         [--interval-s ${AUTOSCALER_DEFAULTS.intervalS}] [--metrics-port P] [--worker-args 'ARGS']
                         [--dry-run] [--once] [--json] ${REDIS_FLAGS_USAGE}
Every --interval-s (fractions allowed): reads the keys with work and the workers' heartbeats, decides
how many workers run and which compile keys each holds, writes each worker's keys to Redis and starts
or stops workers through the driver. Workers are started as 'batchgen worker --assigned --id ID'.
  --driver D          local (default: worker processes on this machine) or kubernetes (a worker Deployment)
  --min-workers N     never fewer workers (default ${d.minWorkers}: scale to zero)
  --max-workers N     never more workers (default: this machine's cores)
  --idle-seconds S    stop an idle, drained worker after S s (default: as long as compiling its keys again
                      would take, within ${d.minIdleSeconds} to ${d.maxIdleSeconds} s)
  --target-wait-s W   the queue wait to aim for (default ${d.targetWaitSeconds})
  --interval-s S      seconds between passes (default ${AUTOSCALER_DEFAULTS.intervalS})
  --metrics-port P    serve /metrics, /scale ({"desired_workers": n}, for KEDA) and /healthz
  --worker-args 'A'   extra flags for the workers the local driver starts, e.g. '--lock-ms 5000 --batch-sizes 1,2'
  --dry-run           decide only: write nothing to Redis, start and stop nothing
  --once              one pass, then exit (the local driver's workers are drained and stopped on exit)
  --json              print each plan as a JSON line: {"desired_workers", "workers": [{"id", "keys", "action"}], "reasons"}
SIGTERM: stop deciding, drain the workers it started, exit.`;

/** The kubernetes driver, loaded only when asked for (it brings the Kubernetes client). */
async function kubernetesDriver(ctx: DriverContext): Promise<Driver> {
  const spec = '../autoscaler/drivers/kubernetes.js';
  let mod: Record<string, unknown>;
  try {
    mod = (await import(spec)) as Record<string, unknown>;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND')
      throw new BatchgenError('invalid_request', '--driver kubernetes: this build has no Kubernetes driver');
    throw e;
  }
  if (typeof mod.createDriver === 'function')
    return (await (mod.createDriver as (c: DriverContext) => Driver | Promise<Driver>)(ctx)) as Driver;
  if (typeof mod.KubernetesDriver === 'function') return new (mod.KubernetesDriver as new () => Driver)();
  throw new BatchgenError('invalid_request', '--driver kubernetes: the Kubernetes driver module exports no driver');
}

/** The plan as text lines, for a terminal. */
export function planText(plan: Plan): string {
  const lines = [`desired workers: ${plan.desired_workers}`];
  for (const w of plan.workers) lines.push(`  ${w.action.padEnd(5)} ${w.id}  ${w.keys.join(' ') || '(no keys)'}`);
  for (const r of plan.reasons) lines.push(`  - ${r}`);
  return `${lines.join('\n')}\n`;
}

export async function autoscaleCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: AUTOSCALE_OPTIONS, strict: true, allowPositionals: true });
  if (values.help) {
    await out(`${USAGE}\n`);
    return 0;
  }
  if (positionals.length !== 0) throw new BatchgenError('invalid_request', `unexpected argument "${positionals[0]}"\n${USAGE}`);
  const models = parseModelSpecs(values.model ?? []);
  if (models.length === 0) throw new BatchgenError('invalid_request', `no model: pass --model NAME=DIR (or set BATCHGEN_MODELS)\n${USAGE}`);
  const driverName = values.driver ?? 'local';
  if (driverName !== 'local' && driverName !== 'kubernetes')
    throw new BatchgenError('invalid_request', `--driver ${driverName}: expected local or kubernetes`);
  const settings: Partial<PolicySettings> = {};
  const min = numberFlag('min-workers', values['min-workers'], { min: 0, integer: true });
  const max = numberFlag('max-workers', values['max-workers'], { min: 1, integer: true });
  const idle = numberFlag('idle-seconds', values['idle-seconds'], { min: 0 });
  const wait = numberFlag('target-wait-s', values['target-wait-s'], { min: 0.001 });
  if (min !== undefined) settings.minWorkers = min;
  if (max !== undefined) settings.maxWorkers = max;
  if (idle !== undefined) settings.idleSeconds = idle;
  if (wait !== undefined) settings.targetWaitSeconds = wait;
  const intervalS = numberFlag('interval-s', values['interval-s'], { min: 0.001 });
  const metricsPort = numberFlag('metrics-port', values['metrics-port'], { min: 0, integer: true });
  const dryRun = values['dry-run'] ?? false;
  const keyspace = keyspaceFrom(values);
  const ctx: DriverContext = {
    models: models.map((m) => `${m.name}=${resolve(m.dir)}`),
    redisUrl: redisUrlFrom(values.redis),
    prefix: new Keyspace(keyspace).prefix,
    workerArgs: (values['worker-args'] ?? '').split(/\s+/).filter(Boolean),
  };
  const log = componentLogger('autoscaler');
  const driver = dryRun ? null : driverName === 'local' ? new LocalDriver({ ...ctx }) : await kubernetesDriver(ctx);
  const print = (plan: Plan) => out(values.json ? `${JSON.stringify(plan)}\n` : planText(plan));
  const scaler = new Autoscaler({
    models,
    redisUrl: values.redis,
    ...keyspace,
    driver,
    intervalS,
    settings,
    metricsPort,
    dryRun,
    logger: log,
    onPlan: values.json && !values.once ? (plan) => void print(plan) : undefined,
  });
  if (values.once) {
    try {
      await print(await scaler.step());
    } finally {
      await scaler.close();
    }
    return 0;
  }
  let stopped: () => void = () => {};
  const finished = new Promise<void>((r) => {
    stopped = r;
  });
  handleShutdown(
    async () => {
      await scaler.close();
    },
    { log, exit: (code) => (code === 0 ? stopped() : process.exit(code)), forceAfterMs: 300_000 },
  );
  await scaler.start();
  await finished;
  return 0;
}
