/** `batchgen worker --model NAME=DIR [...] [--redis URL] [--batch-sizes 1,2,4,8] [--metrics-port P]` */
import { parseArgs } from 'node:util';
import { BatchgenError } from '../shared/errors.js';
import { parseModelSpecs } from '../shared/models.js';
import { componentLogger } from '../observability/logger.js';
import { parseBatchSizes } from '../shared/batch-sizes.js';
import { handleShutdown } from '../worker/shutdown.js';
import { BatchWorker } from '../worker/worker.js';
import { WORKER_DEFAULTS } from '../worker/options.js';
import { keyspaceFrom, numberFlag, REDIS_FLAG_OPTIONS } from './common.js';

const USAGE = `usage: batchgen worker --model NAME=DIR [--model NAME=DIR ...] [--redis URL] [--batch-sizes 1,2,4,8]
                      [--metrics-port P] [--max-wait-ms 20] [--keys MODEL:pP:nN:STRATEGY,...] [--max-keys 32]
                      [--registry-ttl-s 3600]
                      [--lock-ms 30000] [--stalled-interval-ms 30000] [--max-stalled 1] [--engine compiler|noop]
                      [--cache-mb 2048] [--threads 1] [--id ID] [--assigned] [--prefix batchgen] [--hash-tag]
                      [--shutdown-timeout-s 30] [--watchdog-s 30] [--allow-eviction]
Compiles and warms the variants of its keys before taking jobs, then serves micro-batches from the
queues of those keys. Keys: the --keys list, else the keys of its models in the registry that have
work (idle ones are released, least recently served first, when a key with work has no holder).
--assigned (needs --id): exactly the keys the autoscaler assigns to this id (batchgen autoscale),
read again every second; a new key compiles before its jobs are taken, one taken away is released
after the jobs in hand.
SIGTERM: stop taking jobs, finish the batch in hand, exit, within --shutdown-timeout-s whatever Redis
does (jobs left unfinished come back through stall recovery); a second SIGTERM or SIGINT exits at
once. /healthz (with --metrics-port) answers 503 when Redis has not answered for --watchdog-s, when
nothing was fetched for that long while jobs wait, or while Redis is out of memory. A Redis whose
maxmemory-policy evicts keys is refused unless --allow-eviction. --threads: threads of the native
(oneDNN) matmul kernels, default 1 (BATCHGEN_THREADS), for one worker process per core. BATCHGEN_MODELS and REDIS_URL stand
in for --model and --redis.`;

export async function workerCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string', multiple: true },
      'batch-sizes': { type: 'string' },
      'metrics-port': { type: 'string' },
      'max-wait-ms': { type: 'string' },
      keys: { type: 'string', multiple: true },
      'max-keys': { type: 'string' },
      'registry-ttl-s': { type: 'string' },
      'lock-ms': { type: 'string' },
      'stalled-interval-ms': { type: 'string' },
      'max-stalled': { type: 'string' },
      engine: { type: 'string' },
      'cache-mb': { type: 'string' },
      threads: { type: 'string' },
      id: { type: 'string' },
      assigned: { type: 'boolean' },
      'shutdown-timeout-s': { type: 'string' },
      'watchdog-s': { type: 'string' },
      'allow-eviction': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
      ...REDIS_FLAG_OPTIONS,
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const models = parseModelSpecs(values.model ?? []);
  if (models.length === 0) throw new BatchgenError('invalid_request', `no model: pass --model NAME=DIR (or set BATCHGEN_MODELS)\n${USAGE}`);
  const engine = values.engine ?? 'compiler';
  if (engine !== 'compiler' && engine !== 'noop')
    throw new BatchgenError('invalid_request', `--engine ${engine}: expected compiler or noop`);
  const cacheMb = numberFlag('cache-mb', values['cache-mb'], { min: 1 });
  const log = componentLogger('worker');
  const seconds = (name: string, v: string | undefined) =>
    ((x) => (x === undefined ? undefined : x * 1000))(numberFlag(name, v, { min: 0 }));
  const shutdownTimeoutMs = seconds('shutdown-timeout-s', values['shutdown-timeout-s']);
  const worker = new BatchWorker({
    models,
    redisUrl: values.redis,
    ...keyspaceFrom(values),
    engine,
    batchSizes: values['batch-sizes'] ? parseBatchSizes(values['batch-sizes']) : undefined,
    metricsPort: numberFlag('metrics-port', values['metrics-port'], { min: 0, integer: true }),
    maxWaitMs: numberFlag('max-wait-ms', values['max-wait-ms'], { min: 0 }),
    keys: values.keys?.flatMap((k) =>
      k
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
    maxKeys: numberFlag('max-keys', values['max-keys'], { min: 1, integer: true }),
    registryTtlMs: ((s) => (s === undefined ? undefined : s * 1000))(numberFlag('registry-ttl-s', values['registry-ttl-s'], { min: 0 })),
    lockDurationMs: numberFlag('lock-ms', values['lock-ms'], { min: 100 }),
    stalledIntervalMs: numberFlag('stalled-interval-ms', values['stalled-interval-ms'], { min: 100 }),
    maxStalledCount: numberFlag('max-stalled', values['max-stalled'], { min: 0, integer: true }),
    cacheBudgetBytes: cacheMb === undefined ? undefined : cacheMb * 1024 * 1024,
    threads: numberFlag('threads', values.threads, { min: 1, integer: true }),
    id: values.id,
    assigned: values.assigned,
    shutdownTimeoutMs,
    watchdogMs: seconds('watchdog-s', values['watchdog-s']),
    allowEviction: values['allow-eviction'],
    logger: log,
  });
  let stopped: () => void = () => {};
  const finished = new Promise<number>((resolve) => {
    stopped = () => resolve(0);
  });
  handleShutdown(
    async () => {
      await worker.stop();
    },
    {
      log,
      forceAfterMs: shutdownTimeoutMs ?? WORKER_DEFAULTS.shutdownTimeoutMs,
      exit: (code) => (code === 0 ? stopped() : process.exit(code)),
    },
  );
  await worker.start();
  await Promise.race([finished, worker.done().then(() => 0)]);
  await worker.stop();
  return 0;
}
