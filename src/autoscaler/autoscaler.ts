/**
 * The autoscaler's loop. Every `intervalS`: read the state (state.ts) → decide (policy.ts, pure) →
 * write each worker's assignment set (the keys planned for it; all in one MULTI) → apply the plan
 * through the driver (start and stop workers) → log each decision with its reason. Assignments are
 * written before the driver starts a worker, so a new worker finds its keys at its first refresh.
 *
 * It serves, on `metricsPort`: `/metrics` (desired and running workers, decisions by reason),
 * `/scale` (`{"desired_workers": n}`, for KEDA's metrics-api scaler) and `/healthz`.
 *
 * With `dryRun` it reads and decides only: no assignment written or deleted, no driver called.
 * close() stops deciding, waits for the pass in progress, then drains the workers the driver
 * started (driver.close), closes the server and disconnects; it is safe to call twice.
 */
import { availableParallelism } from 'node:os';
import { createServer, type Server } from 'node:http';
import type { Redis } from 'ioredis';
import { writeAssignments } from '../shared/assignments.js';
import { Keyspace, type KeyspaceOptions } from '../shared/keys.js';
import type { ModelSpec } from '../shared/models.js';
import { connectRedis, redactUrl, redisUrlFrom } from '../shared/redis.js';
import { componentLogger, type Logger } from '../observability/logger.js';
import { MetricsRegistry, type Counter, type Gauge } from '../observability/metrics.js';
import type { Driver } from './drivers/driver.js';
import { decide as policyDecide } from './policy.js';
import { DEFAULT_POLICY_SETTINGS } from './policy-settings.js';
import { StateReader } from './state.js';
import type { ClusterState, Plan, PolicySettings } from './types.js';

export interface AutoscalerOptions extends KeyspaceOptions {
  /** The models its workers load (`name` and `dir`). Required (at least one). */
  models: ModelSpec[];
  /**
   * Redis to connect to.
   * @defaultValue `REDIS_URL`, else `redis://127.0.0.1:6379`
   */
  redisUrl?: string;
  /**
   * What starts and stops workers. Required unless `dryRun`.
   * @defaultValue none
   */
  driver?: Driver | null;
  /**
   * Seconds between passes (fractions allowed).
   * @defaultValue `5`
   */
  intervalS?: number;
  /**
   * The policy's settings; what is not given is the policy's default, except `maxWorkers`.
   * @defaultValue DEFAULT_POLICY_SETTINGS, with `maxWorkers` = this machine's cores
   */
  settings?: Partial<PolicySettings>;
  /**
   * Serve `/metrics`, `/scale` and `/healthz` on this port (0: any free port, see `port`).
   * @defaultValue none (no server)
   */
  metricsPort?: number;
  /**
   * Read and decide only: write nothing to Redis, start and stop nothing.
   * @defaultValue `false`
   */
  dryRun?: boolean;
  /**
   * `/healthz` answers 503 after this many passes in a row failed.
   * @defaultValue `3`
   */
  unhealthyAfterErrors?: number;
  /**
   * The decision function (tests may replace it).
   * @defaultValue policy.ts `decide`
   */
  decide?: (state: ClusterState, settings: PolicySettings) => Plan;
  /**
   * Called with each plan a pass decides (the CLI's --json prints it).
   * @defaultValue none
   */
  onPlan?: (plan: Plan) => void;
  /**
   * @defaultValue an `autoscaler` child of the root logger
   */
  logger?: Logger;
}

export const AUTOSCALER_DEFAULTS = { intervalS: 5, unhealthyAfterErrors: 3 } as const;

/** The autoscaler's metrics: [Prometheus name, help] by the name the loop uses. */
const METRICS = {
  gauges: {
    desiredWorkers: ['batchgen_autoscaler_desired_workers', 'Workers the last plan wants'],
    runningWorkers: ['batchgen_autoscaler_running_workers', 'Workers the driver runs (at the last pass)'],
  },
  counters: {
    decisions: [
      'batchgen_autoscaler_decisions_total',
      'Decisions of the policy, by reason (the first word of each reason line)',
      ['reason'],
    ],
    passErrors: ['batchgen_autoscaler_pass_errors_total', 'Passes that failed (read, decide, assign or apply)', []],
  },
} as const;

type AutoscalerMetrics = { registry: MetricsRegistry } & Record<keyof typeof METRICS.gauges, Gauge> &
  Record<keyof typeof METRICS.counters, Counter>;

function createMetrics(): AutoscalerMetrics {
  const registry = new MetricsRegistry();
  const out: Record<string, unknown> = { registry };
  for (const [k, [name, help]] of Object.entries(METRICS.gauges)) out[k] = registry.gauge(name, help);
  for (const [k, [name, help, labels]] of Object.entries(METRICS.counters)) out[k] = registry.counter(name, help, labels);
  return out as AutoscalerMetrics;
}

/** The reason label of a reason line: its first word (`start`, `stop`, `keep`, `assign`, ...), else `other`. */
export function reasonKind(line: string): string {
  const w = /^[a-z]+/.exec(line.trim().toLowerCase())?.[0];
  return w && w.length <= 16 ? w : 'other';
}

/** The assignment sets a plan writes: every worker it keeps or starts gets its keys; one it stops gets none. */
export function plannedAssignments(plan: Plan): Map<string, string[]> {
  return new Map(plan.workers.map((w) => [w.id, w.action === 'stop' ? [] : [...new Set(w.keys)].sort()]));
}

/** Applies the defaults and checks every value; throws naming the first bad one. */
export function resolveSettings(s: Partial<PolicySettings> = {}): PolicySettings {
  const out: PolicySettings = { ...DEFAULT_POLICY_SETTINGS, maxWorkers: availableParallelism(), ...s };
  const { minWorkers, maxWorkers, targetWaitSeconds, idleSeconds } = out;
  if (!(Number.isInteger(minWorkers) && minWorkers >= 0)) throw new Error(`minWorkers must be an integer ≥ 0, got ${minWorkers}`);
  if (!(Number.isInteger(maxWorkers) && maxWorkers >= 1)) throw new Error(`maxWorkers must be a positive integer, got ${maxWorkers}`);
  if (minWorkers > maxWorkers) throw new Error(`minWorkers (${minWorkers}) is above maxWorkers (${maxWorkers})`);
  if (!(targetWaitSeconds > 0)) throw new Error(`targetWaitSeconds must be positive, got ${targetWaitSeconds}`);
  if (idleSeconds !== null && !(idleSeconds >= 0)) throw new Error(`idleSeconds must be ≥ 0, got ${idleSeconds}`);
  return out;
}

export class Autoscaler {
  readonly keys: Keyspace;
  readonly settings: PolicySettings;
  readonly intervalMs: number;
  private readonly metrics = createMetrics();
  private readonly log: Logger;
  private readonly decideFn: (state: ClusterState, settings: PolicySettings) => Plan;
  private readonly unhealthyAfterErrors: number;
  private redis: Redis | null = null;
  private reader: StateReader | null = null;
  private server: Server | null = null;
  private timer: NodeJS.Timeout | null = null;
  private passing: Promise<Plan | null> | null = null;
  private starting: Promise<void> | null = null;
  private closing: Promise<void> | null = null;
  private stopped = false;
  private consecutiveErrors = 0;
  private lastError: string | null = null;
  private _lastPlan: Plan | null = null;

  constructor(private readonly opts: AutoscalerOptions) {
    if (!opts.models || opts.models.length === 0) throw new Error('the autoscaler needs at least one model (--model NAME=DIR)');
    if (!opts.dryRun && !opts.driver) throw new Error('the autoscaler needs a driver unless it is a dry run');
    const intervalS = opts.intervalS ?? AUTOSCALER_DEFAULTS.intervalS;
    if (!(intervalS > 0 && Number.isFinite(intervalS))) throw new Error(`intervalS must be a positive number, got ${intervalS}`);
    this.intervalMs = intervalS * 1000;
    this.unhealthyAfterErrors = opts.unhealthyAfterErrors ?? AUTOSCALER_DEFAULTS.unhealthyAfterErrors;
    this.settings = resolveSettings(opts.settings);
    this.keys = new Keyspace(opts);
    this.decideFn = opts.decide ?? policyDecide;
    this.log = opts.logger ?? componentLogger('autoscaler');
  }

  /** The last plan decided (null before the first pass). */
  get lastPlan(): Plan | null {
    return this._lastPlan;
  }

  /** The port the server listens on (when it serves). */
  get port(): number | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : undefined;
  }

  /** Connects and starts the server (no pass yet). */
  connect(): Promise<void> {
    this.starting ??= this.connectOnce();
    return this.starting;
  }

  private async connectOnce(): Promise<void> {
    const url = redisUrlFrom(this.opts.redisUrl);
    const redis = await connectRedis({ url, role: 'client', name: 'batchgen-autoscaler' });
    this.redis = redis;
    redis.on('error', (e) => this.log.warn({ err: e.message }, 'redis connection error'));
    this.reader = new StateReader(
      redis,
      this.keys,
      this.opts.models.map((m) => m.name),
    );
    if (this.opts.metricsPort !== undefined) this.server = await this.serve(this.opts.metricsPort);
    this.log.info(
      {
        redis: redactUrl(url),
        prefix: this.keys.prefix,
        driver: this.opts.driver?.name ?? null,
        dryRun: this.opts.dryRun ?? false,
        intervalS: this.intervalMs / 1000,
        settings: this.settings,
        port: this.port,
      },
      'autoscaler starting',
    );
  }

  /** Connects, then runs a pass every interval until close(). */
  async start(): Promise<void> {
    await this.connect();
    if (this.stopped || this.timer) return;
    const tick = async () => {
      await this.pass();
      if (!this.stopped) this.timer = setTimeout(tick, this.intervalMs);
    };
    this.timer = setTimeout(tick, 0);
  }

  /** One pass (read → decide → assign → apply); resolves with its plan, or null when it failed or the autoscaler is closing. */
  pass(): Promise<Plan | null> {
    if (this.stopped) return Promise.resolve(null);
    this.passing ??= this.passOnce().finally(() => {
      this.passing = null;
    });
    return this.passing;
  }

  /** One pass that throws its error (for --once). */
  async step(): Promise<Plan> {
    await this.connect();
    const driver = this.opts.driver ?? null;
    const dry = this.opts.dryRun ?? false;
    const running = dry || !driver ? [] : await driver.running();
    const { state, gone } = await this.reader!.read(running);
    const plan = this.decideFn(state, this.settings);
    if (!dry && driver) {
      await writeAssignments(this.redis!, this.keys, plannedAssignments(plan), gone);
      for (const id of gone) this.log.info({ worker: id }, 'worker gone (no heartbeat, not running): its keys are assigned again');
      await driver.apply(plan, state);
    }
    this._lastPlan = plan;
    this.record(plan, running.length, state);
    this.opts.onPlan?.(plan);
    return plan;
  }

  private async passOnce(): Promise<Plan | null> {
    try {
      const plan = await this.step();
      this.consecutiveErrors = 0;
      this.lastError = null;
      return plan;
    } catch (e) {
      const msg = (e as Error).message;
      this.consecutiveErrors += 1;
      this.lastError = msg;
      this.metrics.passErrors.inc();
      this.log.error({ err: msg, consecutive: this.consecutiveErrors }, 'autoscaler pass failed');
      return null;
    }
  }

  private record(plan: Plan, running: number, state: ClusterState): void {
    const m = this.metrics;
    m.desiredWorkers.set(plan.desired_workers);
    m.runningWorkers.set(running);
    for (const r of plan.reasons) {
      m.decisions.inc({ reason: reasonKind(r) }, 1);
      this.log.info({ reason: r }, `decision: ${r}`);
    }
    const changed = plan.workers.filter((w) => w.action !== 'keep');
    this.log.debug(
      {
        desired: plan.desired_workers,
        running,
        keys: state.keys.filter((k) => k.backlog + k.active > 0).length,
        workers: plan.workers.map((w) => `${w.id}:${w.action}:${w.keys.length}`),
        changed: changed.length,
      },
      'plan',
    );
  }

  /** What /healthz says. */
  health(): { ok: boolean; consecutiveErrors: number; lastError: string | null } {
    return { ok: this.consecutiveErrors < this.unhealthyAfterErrors, consecutiveErrors: this.consecutiveErrors, lastError: this.lastError };
  }

  private serve(port: number): Promise<Server> {
    const server = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      const json = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(`${JSON.stringify(body)}\n`);
      };
      if (req.method !== 'GET') json(405, { error: `method ${req.method} not allowed` });
      else if (path === '/metrics') {
        this.metrics.registry.render().then(
          (text) => {
            res.writeHead(200, { 'content-type': this.metrics.registry.contentType });
            res.end(text);
          },
          (e: Error) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(`metrics could not be collected: ${e.message}\n`);
          },
        );
      } else if (path === '/scale') {
        const plan = this._lastPlan;
        if (plan) json(200, { desired_workers: plan.desired_workers });
        else json(503, { error: 'no plan yet: the autoscaler has not completed its first pass' });
      } else if (path === '/healthz') {
        const h = this.health();
        if (h.ok) {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('ok\n');
        } else json(503, h);
      } else json(404, { error: 'not found' });
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '0.0.0.0', () => {
        server.off('error', reject);
        resolve(server);
      });
    });
  }

  /** Stops deciding, waits for the pass in progress, drains the driver's workers, closes. Safe twice. */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const steps: [string, () => unknown][] = [
      ['finish connecting', () => this.starting],
      ['finish the pass in progress', () => this.passing],
      ['drain the workers', () => this.opts.driver?.close()],
      ['close the server', () => this.closeServer()],
      ['disconnect from Redis', () => this.redis?.disconnect()],
    ];
    for (const [name, run] of steps) {
      try {
        await run();
      } catch (e) {
        this.log.warn({ step: name, err: (e as Error).message }, `close: could not ${name}`);
      }
    }
    this.log.info('autoscaler stopped');
  }

  private closeServer(): Promise<void> | undefined {
    const server = this.server;
    if (!server) return undefined;
    return new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  }
}
