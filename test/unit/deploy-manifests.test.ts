/**
 * The deployment files as written: every manifest in deploy/ parses, every Kubernetes object
 * validates against the schema of its apiVersion and kind (kubernetes-models; KEDA's with
 * @kubernetes-models/keda; an unknown kind fails), every container or compose service that runs
 * `batchgen` names an existing command and passes that command's own parseArgs table (so a renamed
 * or removed flag fails here), the image is the one the Dockerfile says it builds, Redis keeps its
 * queue keys (AOF fsync every second, noeviction), and the pieces name each other consistently
 * (RBAC, Services, the KEDA trigger and the pool Deployment).
 *
 * Nothing here runs Docker or Kubernetes: no engine and no cluster are at hand. Kubernetes's schemas
 * accept unknown fields, so a misspelt field name passes `validate()`; the checks below on the
 * fields that matter (args, env, probes, ports, RBAC) are what catch those.
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { join, relative } from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { ROOT } from '../helpers/processes.js';
import { SCALE_PATH } from '../../src/autoscaler/scale-endpoint.js';

// ---- the shapes read here (only the fields the checks look at) ----

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath?: string } };
}
interface Probe {
  httpGet?: { path?: string; port?: string | number };
  tcpSocket?: { port?: string | number };
  exec?: { command?: string[] };
}
interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  volumeMounts?: { name: string; mountPath: string }[];
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  serviceAccountName?: string;
  terminationGracePeriodSeconds?: number;
  volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[];
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: {
    replicas?: number;
    selector?: Record<string, unknown>;
    template?: { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
    ports?: { name?: string; port: number; targetPort?: string | number }[];
    scaleTargetRef?: { name: string; kind?: string };
    triggers?: { type: string; metricType?: string; metadata: Record<string, string> }[];
  };
  rules?: { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] }[];
  roleRef?: { kind: string; name: string };
  subjects?: { kind: string; name: string }[];
}
interface ComposeService {
  image?: string;
  build?: unknown;
  entrypoint?: string | string[];
  command?: string | string[];
  profiles?: string[];
  healthcheck?: { test?: string[] };
  depends_on?: Record<string, { condition?: string }> | string[];
}

interface Found {
  file: string;
  object: K8sObject;
}
/** One `batchgen ...` invocation found in a container or a compose service. */
interface Invocation {
  where: string;
  argv: string[];
  env: EnvVar[];
}

// ---- reading the files ----

const DEPLOY = join(ROOT, 'deploy');

function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(e.name) ? [p] : [];
  });
}

function readManifests(): Found[] {
  const found: Found[] = [];
  for (const file of yamlFiles(DEPLOY)) {
    const rel = relative(ROOT, file);
    for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
      assert.deepEqual(
        doc.errors.map((e) => e.message),
        [],
        `${rel}: YAML errors`,
      );
      const object = doc.toJS() as K8sObject | null;
      if (object === null) continue; // an empty document (a trailing ---)
      assert.ok(
        object.apiVersion && object.kind && object.metadata?.name,
        `${rel}: every document is an object with apiVersion, kind and a name`,
      );
      found.push({ file: rel, object });
    }
  }
  return found;
}

/** The module of kubernetes-models that holds an apiVersion's classes. */
function modelModule(apiVersion: string): string | null {
  if (apiVersion === 'keda.sh/v1alpha1') return '@kubernetes-models/keda/keda.sh/v1alpha1';
  if (/^v1$/.test(apiVersion)) return 'kubernetes-models/v1';
  if (/^(apps|batch|policy|autoscaling|[a-z.]+\.k8s\.io)\/v[0-9a-z]+$/.test(apiVersion)) return `kubernetes-models/${apiVersion}`;
  return null;
}

/** `image: batchgen:latest`, from the Dockerfile's build line (`docker build -t NAME .`). */
function dockerfileImage(): string {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const m = /docker build -t (\S+) \./.exec(text);
  assert.ok(m, 'the Dockerfile says how it is built: docker build -t NAME .');
  return m[1];
}

/** Words of a `sh -c` string (quotes kept simple: '...' and "..."), as commands split at && || ; |. */
function shellCommands(script: string): string[][] {
  const words = script.match(/'[^']*'|"[^"]*"|&&|\|\||[;|]|[^\s;|&]+/g) ?? [];
  const commands: string[][] = [[]];
  for (const w of words) {
    if (w === '&&' || w === '||' || w === ';' || w === '|') commands.push([]);
    else commands[commands.length - 1].push(w.replace(/^(['"])(.*)\1$/, '$2'));
  }
  return commands.filter((c) => c.length > 0);
}

const ENTRY = '/app/bin/batchgen.js';

/** The batchgen argv of an image's process: the ENTRYPOINT's (CMD-less) arguments, or those in a `sh -c`. */
function invocations(where: string, entrypoint: string[] | undefined, args: string[] | undefined, env: EnvVar[]): Invocation[] {
  if (entrypoint === undefined) return [{ where, argv: args ?? [], env }];
  if (entrypoint[0] === 'node' && entrypoint[1] === ENTRY) return [{ where, argv: [...entrypoint.slice(2), ...(args ?? [])], env }];
  if ((entrypoint[0] === 'sh' || entrypoint[0] === 'bash') && entrypoint[1] === '-c') {
    const found = shellCommands(entrypoint[2] ?? '').flatMap((words) => {
      const at = words.findIndex((w) => w === ENTRY || w === 'batchgen');
      return at < 0 ? [] : [{ where, argv: words.slice(at + 1), env }];
    });
    assert.ok(found.length > 0, `${where}: a shell entrypoint in the batchgen image that runs no batchgen command`);
    return found;
  }
  assert.fail(`${where}: an entrypoint this test does not know how to read: ${JSON.stringify(entrypoint)}`);
}

function podSpecs(found: Found[]): { where: string; object: K8sObject; spec: PodSpec }[] {
  return found
    .filter((f) => f.object.spec?.template?.spec)
    .map((f) => ({ where: `${f.file} ${f.object.kind}/${f.object.metadata.name}`, object: f.object, spec: f.object.spec!.template!.spec }));
}

// ---- each command's parseArgs table, as the command hands it over ----

let tables: Map<string, ParseArgsConfig>;
let realParseArgs: typeof import('node:util').parseArgs;

before(async () => {
  const require = createRequire(import.meta.url);
  const util = require('node:util') as typeof import('node:util');
  realParseArgs = util.parseArgs;
  const stop = new Error('options captured');
  let seen: ParseArgsConfig | null = null;
  util.parseArgs = ((cfg: ParseArgsConfig) => {
    seen = cfg;
    throw stop;
  }) as typeof util.parseArgs;
  syncBuiltinESMExports();
  tables = new Map();
  const errWrite = process.stderr.write;
  process.stderr.write = (() => true) as typeof process.stderr.write; // a command that reports the stop itself
  try {
    const { COMMANDS } = await import('../../src/cli/commands.js');
    for (const [name, cmd] of Object.entries(COMMANDS)) {
      seen = null;
      await cmd.run(['--help']).catch(() => {});
      if (seen) tables.set(name, seen);
    }
  } finally {
    process.stderr.write = errWrite;
    util.parseArgs = realParseArgs;
    syncBuiltinESMExports();
  }
});

/** Parses an argv with its command's own table: throws as the command would on a flag it lacks. */
function checkInvocation(inv: Invocation): { command: string; values: Record<string, unknown> } {
  const [command, ...rest] = inv.argv;
  assert.ok(command && !command.startsWith('-'), `${inv.where}: names a batchgen command (argv ${JSON.stringify(inv.argv)})`);
  const table = tables.get(command);
  assert.ok(table, `${inv.where}: batchgen ${command} is not a command of src/cli/commands.ts (or it does not parse flags)`);
  let values: Record<string, unknown>;
  try {
    ({ values } = realParseArgs({ ...table, args: rest, strict: true }) as { values: Record<string, unknown> });
  } catch (e) {
    assert.fail(`${inv.where}: batchgen ${command} ${rest.join(' ')}: ${(e as Error).message}`);
  }
  for (const arg of rest) {
    for (const [, name] of arg.matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
      assert.ok(
        inv.env.some((e) => e.name === name),
        `${inv.where}: $(${name}) in the args, but the container sets no env ${name}`,
      );
    }
  }
  return { command, values };
}

// ---- the tests ----

test('every Kubernetes object in deploy/ validates against the schema of its apiVersion and kind', async () => {
  const found = readManifests();
  assert.ok(found.length >= 8, `deploy/ has its manifests (found ${found.length})`);
  for (const { file, object } of found) {
    const where = `${file} ${object.kind}/${object.metadata.name}`;
    const module = modelModule(object.apiVersion);
    assert.ok(module, `${where}: unknown apiVersion ${object.apiVersion}`);
    const classes = (await import(module)) as Record<string, new (data: unknown) => { validate(): void }>;
    const Model = classes[object.kind];
    assert.ok(typeof Model === 'function', `${where}: unknown kind ${object.kind} in ${object.apiVersion}`);
    assert.doesNotThrow(() => new Model(object).validate(), `${where}: schema`);
  }
});

test('the schema check does fail: a wrong type, or a kind that does not exist', async () => {
  const { Deployment } = await import('kubernetes-models/apps/v1');
  const bad = {
    metadata: { name: 'x' },
    spec: { selector: {}, template: { spec: { containers: [{ name: 'w', ports: [{ containerPort: 'x' }] }] } } },
  };
  assert.throws(() => new Deployment(bad as never).validate(), /containerPort must be integer/);
  const apps = (await import('kubernetes-models/apps/v1')) as Record<string, unknown>;
  assert.equal(apps.ScaledObject, undefined);
  assert.equal(modelModule('example.com/v1'), null);
});

test('every batchgen container and compose service names a command and only flags that command takes', () => {
  const image = dockerfileImage();
  const runs: Invocation[] = [];
  for (const { where, spec } of podSpecs(readManifests())) {
    for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
      if (c.image === image) runs.push(...invocations(`${where} container ${c.name}`, c.command, c.args, c.env ?? []));
    }
  }
  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, ComposeService>;
  };
  for (const [name, s] of Object.entries(compose.services)) {
    if (s.image !== image) continue;
    const split = (v: string | string[] | undefined) => (typeof v === 'string' ? v.split(/\s+/) : v);
    runs.push(...invocations(`docker-compose.yml service ${name}`, split(s.entrypoint), split(s.command), []));
  }
  const commands = runs.map(checkInvocation).map((r) => r.command);
  for (const c of ['worker', 'autoscale', 'make-model', 'submit']) assert.ok(commands.includes(c), `some deployment runs batchgen ${c}`);
});

test('a flag the command does not take fails the check (the check is not a formality)', () => {
  assert.throws(
    () => checkInvocation({ where: 'test', argv: ['worker', '--model', 'a=/m', '--no-such-flag'], env: [] }),
    /Unknown option '--no-such-flag'/,
  );
  assert.throws(() => checkInvocation({ where: 'test', argv: ['no-such-command'], env: [] }), /not a command/);
  assert.throws(() => checkInvocation({ where: 'test', argv: ['worker', '--id', '$(POD_NAME)'], env: [] }), /sets no env POD_NAME/);
  assert.throws(() => checkInvocation({ where: 'test', argv: ['worker', '--metrics-port'], env: [] }), /argument missing/);
  assert.deepEqual(shellCommands(`test -f /m/x || node ${ENTRY} make-model --out '/m/a b'`), [
    ['test', '-f', '/m/x'],
    ['node', ENTRY, 'make-model', '--out', '/m/a b'],
  ]);
});

test('one image name: the Dockerfile builds it, compose tags it, Kubernetes runs it; Redis is the same image everywhere', () => {
  const image = dockerfileImage();
  const entry = /^ENTRYPOINT \["node", "([^"]+)"\]$/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  assert.equal(entry?.[1], ENTRY, 'the image runs bin/batchgen.js');
  assert.ok(existsSync(join(ROOT, 'bin', 'batchgen.js')));

  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, ComposeService>;
  };
  const images = new Set<string>();
  for (const [name, s] of Object.entries(compose.services)) {
    assert.ok(s.image, `compose service ${name} names its image`);
    if (s.build !== undefined) assert.equal(s.image, image, `compose service ${name} builds the Dockerfile: its image is ${image}`);
    images.add(s.image!);
  }
  for (const { where, spec } of podSpecs(readManifests())) {
    for (const c of spec.containers) {
      assert.ok(c.image, `${where} container ${c.name} names its image`);
      images.add(c.image!);
      if (!c.image!.startsWith('redis:')) assert.equal(c.image, image, `${where} container ${c.name}`);
    }
  }
  const redis = [...images].filter((i) => i.startsWith('redis:'));
  assert.equal(redis.length, 1, `one Redis image in compose and Kubernetes: ${redis.join(', ')}`);
  assert.deepEqual([...images].sort(), [image, redis[0]].sort());
});

/** `--flag value` pairs of an argv, in order. */
function hasPair(argv: string[], flag: string, value: string): boolean {
  return argv.some((a, i) => a === flag && argv[i + 1] === value);
}

test('Redis keeps its queue keys: AOF with fsync every second and noeviction, in compose and in Kubernetes', () => {
  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, ComposeService>;
  };
  const redis = compose.services.redis;
  const cmd = redis.command as string[];
  assert.equal(cmd[0], 'redis-server');
  for (const [flag, value] of [
    ['--appendonly', 'yes'],
    ['--appendfsync', 'everysec'],
    ['--maxmemory-policy', 'noeviction'],
  ]) {
    assert.ok(hasPair(cmd, flag, value), `compose redis: ${flag} ${value}`);
  }
  assert.deepEqual(redis.healthcheck?.test, ['CMD', 'redis-cli', 'ping']);
  for (const [name, s] of Object.entries(compose.services)) {
    const deps = s.depends_on;
    if (deps && !Array.isArray(deps) && deps.redis)
      assert.equal(deps.redis.condition, 'service_healthy', `compose ${name} waits for a healthy Redis`);
    if (Array.isArray(deps)) assert.ok(!deps.includes('redis'), `compose ${name}: depends on redis with condition service_healthy`);
  }

  const k8sRedis = podSpecs(readManifests()).flatMap((p) => p.spec.containers.filter((c) => c.image?.startsWith('redis:')));
  assert.equal(k8sRedis.length, 1);
  for (const [flag, value] of [
    ['--appendonly', 'yes'],
    ['--appendfsync', 'everysec'],
    ['--maxmemory-policy', 'noeviction'],
  ]) {
    assert.ok(hasPair(k8sRedis[0].args ?? [], flag, value), `k8s redis: ${flag} ${value}`);
  }
});

test('compose: the autoscaler runs the local driver by default; fixed workers only under a profile', () => {
  const compose = parseYaml(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
    services: Record<string, ComposeService>;
  };
  const { autoscaler, worker } = compose.services;
  assert.ok(autoscaler && worker, 'an autoscaler and a worker service');
  assert.equal((autoscaler.command as string[])[0], 'autoscale');
  assert.ok(hasPair(autoscaler.command as string[], '--driver', 'local'));
  assert.equal(autoscaler.profiles, undefined, 'the autoscaler starts with a plain `docker compose up`');
  assert.equal((worker.command as string[])[0], 'worker');
  assert.ok((worker.profiles ?? []).length > 0, 'fixed workers start only under a profile');
});

test('Kubernetes: one pool of --assigned workers named by their pod, scaled by the autoscaler (RBAC to match) or by KEDA on /scale', () => {
  const found = readManifests();
  const objects = found.map((f) => f.object);
  const pods = podSpecs(found);
  const image = dockerfileImage();
  const runOf = (c: Container, where: string) => checkInvocation(invocations(where, c.command, c.args, c.env ?? [])[0]);

  // the pool: the only Deployment that runs workers, every worker --assigned with its pod's name as id
  const workerPods = pods.filter((p) => p.spec.containers.some((c) => c.image === image && (c.args ?? [])[0] === 'worker'));
  assert.equal(workerPods.length, 1, `one worker pool, not one Deployment per key: ${workerPods.map((p) => p.where).join(', ')}`);
  const pool = workerPods[0];
  assert.equal(pool.object.kind, 'Deployment');
  assert.equal(pool.object.spec?.replicas, undefined, 'the pool leaves its replica count to the autoscaler or KEDA');
  const w = pool.spec.containers.find((c) => (c.args ?? [])[0] === 'worker')!;
  const wRun = runOf(w, pool.where);
  assert.equal(wRun.values.assigned, true, 'the pool runs --assigned workers');
  assert.equal(wRun.values.keys, undefined, 'no --keys: the autoscaler assigns them');
  assert.equal(wRun.values.id, '$(POD_NAME)');
  assert.deepEqual(w.env?.find((e) => e.name === 'POD_NAME')?.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
  const metricsPort = Number(wRun.values['metrics-port']);
  const named = (port: string | number | undefined) =>
    typeof port === 'number' ? port : w.ports?.find((p) => p.name === port)?.containerPort;
  for (const probe of ['readinessProbe', 'livenessProbe'] as const) {
    assert.equal(w[probe]?.httpGet?.path, '/healthz', `${probe} on /healthz`);
    assert.equal(named(w[probe]?.httpGet?.port), metricsPort, `${probe} on the --metrics-port`);
  }
  assert.ok((pool.spec.terminationGracePeriodSeconds ?? 30) >= 120, 'a grace period long enough to drain a batch');
  assert.ok(w.resources?.requests?.cpu && w.resources?.requests?.memory && w.resources?.limits?.memory, 'the worker asks for resources');

  // the autoscaler: --driver kubernetes, the same models, a service account with just what the driver uses
  const scalerPods = pods.filter((p) => p.spec.containers.some((c) => (c.args ?? [])[0] === 'autoscale'));
  assert.equal(scalerPods.length, 1);
  const scaler = scalerPods[0];
  const a = scaler.spec.containers.find((c) => (c.args ?? [])[0] === 'autoscale')!;
  const aRun = runOf(a, scaler.where);
  assert.equal(aRun.values.driver, 'kubernetes');
  assert.deepEqual(aRun.values.model, wRun.values.model, 'the autoscaler plans for the models the workers load');
  assert.equal(scaler.object.spec?.replicas ?? 1, 1, 'one autoscaler');
  const deploymentEnv = a.env?.find((e) => e.name === 'BATCHGEN_KUBE_DEPLOYMENT')?.value ?? 'batchgen-worker';
  assert.equal(deploymentEnv, pool.object.metadata.name, 'the driver scales the pool');

  const sa = scaler.spec.serviceAccountName;
  assert.ok(sa && objects.some((o) => o.kind === 'ServiceAccount' && o.metadata.name === sa), 'its ServiceAccount is defined');
  const binding = objects.find((o) => o.kind === 'RoleBinding' && o.subjects?.some((s) => s.kind === 'ServiceAccount' && s.name === sa));
  assert.ok(binding, 'a RoleBinding for it');
  assert.equal(binding.roleRef?.kind, 'Role', 'a namespaced Role, not a ClusterRole');
  const role = objects.find((o) => o.kind === 'Role' && o.metadata.name === binding.roleRef?.name);
  assert.ok(role, 'the bound Role is defined');
  const grants = (role.rules ?? []).flatMap((r) =>
    r.apiGroups.flatMap((g) =>
      r.resources.flatMap((res) => r.verbs.map((v) => `${g}/${res}:${v}${r.resourceNames ? `@${r.resourceNames.join('+')}` : ''}`)),
    ),
  );
  const poolName = pool.object.metadata.name;
  assert.deepEqual(
    grants.sort(),
    [
      `apps/deployments:get@${poolName}`,
      `apps/deployments/scale:get@${poolName}`,
      `apps/deployments/scale:patch@${poolName}`,
      '/pods:get',
      '/pods:list',
      '/pods:patch',
    ].sort(),
    'exactly what the kubernetes driver calls: nothing more',
  );

  // a Service in front of the autoscaler's --metrics-port, which serves /scale (and /healthz, its probes)
  const scalerPort = Number(aRun.values['metrics-port']);
  for (const probe of ['readinessProbe', 'livenessProbe'] as const) {
    const port = a[probe]?.httpGet?.port;
    assert.equal(a[probe]?.httpGet?.path, '/healthz', `autoscaler ${probe} on /healthz`);
    assert.equal(
      typeof port === 'number' ? port : a.ports?.find((p) => p.name === port)?.containerPort,
      scalerPort,
      `autoscaler ${probe} port`,
    );
  }
  const labels = scaler.object.spec?.template?.metadata?.labels ?? {};
  const service = objects.find(
    (o) =>
      o.kind === 'Service' &&
      Object.entries(o.spec?.selector ?? {}).every(([k, v]) => labels[k] === v) &&
      Object.keys(o.spec?.selector ?? {}).length > 0,
  );
  assert.ok(service, "a Service selects the autoscaler's pod");
  const sp = service.spec!.ports!.find((p) => {
    const target =
      typeof p.targetPort === 'string' ? a.ports?.find((c) => c.name === p.targetPort)?.containerPort : (p.targetPort ?? p.port);
    return target === scalerPort;
  });
  assert.ok(sp, 'the Service reaches the --metrics-port');

  // KEDA, the alternative: the pool, metrics-api on the autoscaler's /scale, one replica per desired worker
  const scaled = objects.filter((o) => o.kind === 'ScaledObject');
  assert.equal(scaled.length, 1);
  assert.equal(scaled[0].spec?.scaleTargetRef?.name, poolName);
  const trigger = scaled[0].spec?.triggers ?? [];
  assert.equal(trigger.length, 1);
  assert.equal(trigger[0].type, 'metrics-api');
  assert.equal(trigger[0].metricType ?? 'AverageValue', 'AverageValue', 'n / 1 replicas, not a ratio of the current count');
  assert.equal(trigger[0].metadata.valueLocation, 'desired_workers');
  assert.equal(trigger[0].metadata.targetValue, '1');
  const url = new URL(trigger[0].metadata.url);
  assert.equal(url.pathname, SCALE_PATH);
  assert.equal(Number(url.port), sp.port);
  assert.equal(url.hostname.split('.')[0], service.metadata.name);

  // every claim a pod mounts is defined
  for (const { where, spec } of pods) {
    for (const v of spec.volumes ?? []) {
      const claim = v.persistentVolumeClaim?.claimName;
      if (claim)
        assert.ok(
          objects.some((o) => o.kind === 'PersistentVolumeClaim' && o.metadata.name === claim),
          `${where}: claim ${claim} is defined`,
        );
    }
  }
});
