/**
 * The command line as a new user meets it: every failure is one line with a code (no stack),
 * `--version`, every command's `--help` names every option it takes, make-model keeps an existing
 * folder, and a worker started the way the README says stops on SIGTERM to the pid the shell gives.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { hasRedisServer, startRedisServer } from '../helpers/redis-server.js';
import { ensureTinyModel, ROOT, runCli } from '../helpers/processes.js';
import { checkLogLevel, describeFailure, failureText } from '../../src/cli/failure.js';
import { outFolderProblem } from '../../src/cli/make-model.js';
import { undocumentedOptions } from '../../src/cli/common.js';
import { BatchgenError } from '../../src/shared/errors.js';

const skip = !hasRedisServer() && 'redis-server is not installed';
let tmp: string;

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'batchgen-cli-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** One line on stderr, `batchgen <cmd>: error [<code>]: ...`, and no stack frame. */
function assertOneLineError(stderr: string, command: string, code: string): void {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{')); // pino JSON lines aside
  assert.equal(lines.length, 1, `expected one line, got:\n${stderr}`);
  assert.match(lines[0], new RegExp(`^batchgen ${command}: error \\[${code}\\]: `));
  assert.doesNotMatch(stderr, /^\s+at /m, 'no stack trace');
}

async function listening(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  await new Promise<void>((res) => server.listen(0, '0.0.0.0', () => res()));
  const a = server.address();
  return { server, port: typeof a === 'object' && a ? a.port : 0 };
}

// ---- pure: the failure table ----

test('describeFailure: platform, Redis and configuration errors each get a code and one line', async () => {
  const enoent = (() => {
    try {
      readFileSync(join(tmp, 'missing.jsonl'));
    } catch (e) {
      return e;
    }
  })();
  assert.deepEqual(
    { code: describeFailure(enoent).code, line: describeFailure(enoent).message.includes('\n') },
    { code: 'file_not_found', line: false },
  );
  assert.match(describeFailure(enoent).message, /missing\.jsonl/);

  const { server, port } = await listening();
  const second = createServer();
  const inUse = await new Promise<unknown>((res) => {
    second.once('error', res);
    second.listen(port, '0.0.0.0');
  });
  server.close();
  assert.equal(describeFailure(inUse).code, 'port_in_use');
  assert.match(describeFailure(inUse).message, new RegExp(`:${port}\\)`));

  const eacces = Object.assign(new Error("EACCES: permission denied, open '/root/x'"), { code: 'EACCES', path: '/root/x' });
  assert.equal(describeFailure(eacces).code, 'permission_denied');

  const unknownLevel = (() => {
    try {
      pino({ level: 'loud' });
    } catch (e) {
      return e;
    }
  })();
  assert.ok(unknownLevel instanceof Error, 'pino refuses an unknown level');
  assert.equal(describeFailure(unknownLevel).code, 'invalid_config');

  assert.equal(describeFailure(new Error('connect ECONNREFUSED 127.0.0.1:1')).code, 'redis_unavailable');
  assert.equal(describeFailure(new TypeError('boom')).code, 'internal_error');
  assert.equal(describeFailure(new BatchgenError('cancelled', 'x')).code, 'cancelled');

  const text = failureText('status', new TypeError('boom'), false);
  assert.equal(text.split('\n').filter(Boolean).length, 1);
  assert.match(failureText('status', new TypeError('boom'), true), /\n\s+at /, 'BATCHGEN_DEBUG shows the stack');
});

test('checkLogLevel: pino levels and silent pass, anything else is invalid_config', () => {
  for (const l of [undefined, 'trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']) checkLogLevel(l);
  assert.throws(
    () => checkLogLevel('verbose'),
    (e: unknown) => e instanceof BatchgenError && e.code === 'invalid_config' && /verbose/.test(e.message),
  );
});

test('describeFailure: real Redis replies OOM and NOPERM map to their codes', { skip }, async () => {
  const server = await startRedisServer(['--maxmemory', '1mb', '--maxmemory-policy', 'noeviction']);
  const r = new Redis(server.url);
  try {
    await r.call('ACL', 'SETUSER', 'reader', 'on', '>pw', '~*', '+get');
    const oom = await (async () => {
      const big = 'x'.repeat(64 * 1024);
      for (let i = 0; i < 200; i++) await r.set(`k${i}`, big);
    })().then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(oom, 'a full Redis refuses writes');
    assert.equal(describeFailure(oom).code, 'redis_out_of_memory');
    const reader = new Redis(server.url.replace('//', '//reader:pw@'));
    const noperm = await reader.set('x', '1').then(
      () => null,
      (e: unknown) => e,
    );
    reader.disconnect();
    assert.equal(describeFailure(noperm).code, 'redis_permission_denied');
  } finally {
    r.disconnect();
    await server.stop();
  }
});

// ---- the commands, as run ----

test('batchgen --version prints the version of package.json', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const r = runCli(['--version']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `${pkg.version}\n`);
});

test('failures as run: unknown log level, missing file, port in use, refused login are one line each', { skip }, async () => {
  const lvl = runCli(['status', 'b1'], { env: { BATCHGEN_LOG_LEVEL: 'loud' } });
  assert.equal(lvl.code, 1);
  assertOneLineError(lvl.stderr, 'status', 'invalid_config');

  const model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  const missing = runCli(['plan-buckets', join(tmp, 'missing.jsonl'), '--model', model]);
  assert.equal(missing.code, 1);
  assertOneLineError(missing.stderr, 'plan-buckets', 'file_not_found');

  const redis = await startRedisServer();
  const admin = new Redis(redis.url);
  await admin.config('SET', 'requirepass', 'sekret');
  admin.disconnect();
  const { server, port } = await listening();
  try {
    const login = runCli(['list', '--redis', redis.url]);
    assert.equal(login.code, 1);
    assertOneLineError(login.stderr, 'list', 'redis_auth_failed');

    const url = redis.url.replace('//', '//:sekret@');
    const busy = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const p = spawn(
        process.execPath,
        [
          join(ROOT, 'dist/src/cli/main.js'),
          'worker',
          '--redis',
          url,
          '--model',
          `tiny=${model}`,
          '--engine',
          'noop',
          '--metrics-port',
          String(port),
        ],
        {
          env: { ...process.env, BATCHGEN_LOG_LEVEL: 'silent' },
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      let stderr = '';
      p.stderr!.on('data', (d) => (stderr += d));
      p.once('exit', (code) => resolve({ code, stderr }));
    });
    assert.equal(busy.code, 1);
    assertOneLineError(busy.stderr, 'worker', 'port_in_use');
  } finally {
    server.close();
    await redis.stop();
  }
});

test("every command's --help names every option of its parseArgs table", async () => {
  // The option table of each command, as it hands it to parseArgs (stopped right there).
  const require = createRequire(import.meta.url);
  const util = require('node:util') as typeof import('node:util');
  const original = util.parseArgs;
  const stop = new Error('options captured');
  let seen: NonNullable<ParseArgsConfig['options']> | null = null;
  util.parseArgs = ((cfg: ParseArgsConfig) => {
    seen = cfg.options ?? {};
    throw stop;
  }) as typeof util.parseArgs;
  syncBuiltinESMExports();
  const tables = new Map<string, NonNullable<ParseArgsConfig['options']>>();
  let commands: Record<string, { redisFlags?: true }>;
  const errWrite = process.stderr.write;
  process.stderr.write = (() => true) as typeof process.stderr.write; // a command that reports the stop itself
  try {
    const { COMMANDS } = await import('../../src/cli/commands.js');
    commands = COMMANDS;
    for (const [name, cmd] of Object.entries(COMMANDS)) {
      seen = null;
      await cmd.run(['--help']).then(
        (code) => assert.notEqual(code, 0, `${name} stopped at parseArgs`),
        (e: unknown) => assert.equal(e, stop, `${name} stopped at parseArgs`),
      );
      assert.ok(seen, `${name} parses its flags with parseArgs`);
      tables.set(name, seen!);
    }
  } finally {
    process.stderr.write = errWrite;
    util.parseArgs = original;
    syncBuiltinESMExports();
  }
  assert.ok(tables.size >= 11);
  for (const [name, options] of tables) {
    const r = runCli([name, '--help']); // the help as a user sees it
    assert.equal(r.code, 0, `${name} --help: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`usage: batchgen ${name}\\b`), `${name} --help prints its usage`);
    assert.deepEqual(undocumentedOptions(r.stdout, options), [], `${name} --help leaves out options it takes`);
    assert.equal(
      commands[name].redisFlags === true,
      'redis' in options && 'prefix' in options && 'hash-tag' in options,
      `${name}: redisFlags marks exactly the commands that take the Redis flags`,
    );
  }
});

test('undocumentedOptions: an option is mentioned only as a whole --name', () => {
  const opts = { out: { type: 'string' }, 'out-dir': { type: 'string' }, help: { type: 'boolean' } } as const;
  assert.deepEqual(undocumentedOptions('usage: x --out-dir D', opts), ['out']);
  assert.deepEqual(undocumentedOptions('usage: x --out F', opts), ['out-dir']);
  assert.deepEqual(undocumentedOptions('usage: x --out F --out-dir D', opts), []);
});

test('make-model refuses an existing non-empty folder without --force, and keeps its files', () => {
  const dir = join(tmp, 'model');
  assert.equal(outFolderProblem(dir), null, 'a folder that does not exist');
  mkdirSync(dir);
  assert.equal(outFolderProblem(dir), null, 'an empty folder');
  writeFileSync(join(dir, 'notes.txt'), 'keep me');
  assert.match(outFolderProblem(dir) ?? '', /not empty/);
  writeFileSync(join(tmp, 'file'), 'x');
  assert.match(outFolderProblem(join(tmp, 'file')) ?? '', /not a folder/);

  const args = ['make-model', '--out', dir, '--layers', '1', '--embd', '8', '--heads', '2', '--positions', '8', '--vocab', '300'];
  const refused = runCli(args);
  assert.equal(refused.code, 1);
  assertOneLineError(refused.stderr, 'make-model', 'already_exists');
  assert.equal(existsSync(join(dir, 'config.json')), false, 'nothing written');
  const forced = runCli([...args, '--force']);
  assert.equal(forced.code, 0, forced.stderr);
  assert.ok(existsSync(join(dir, 'config.json')));
  assert.equal(readFileSync(join(dir, 'notes.txt'), 'utf8'), 'keep me');
});

test('a worker started in the background as the README says stops on SIGTERM to the pid the shell gives', { skip }, async () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const m = /^((?:npx )?\S*batchgen\S*) worker [^\n]*&/m.exec(readme);
  assert.ok(m, 'the README starts a worker in the background');
  const launcher = m[1];
  const redis = await startRedisServer();
  const model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  try {
    // the shell prints the background pid ($!), waits for it, then prints its exit status
    const script = `${launcher} worker --model tiny=${model} --engine noop --redis ${redis.url} & echo "pid $!"; wait $!; echo "exit $?"`;
    const sh = spawn('sh', ['-c', script], {
      cwd: ROOT,
      env: { ...process.env, BATCHGEN_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    sh.stdout!.on('data', (d) => (stdout += d));
    const exited = new Promise<void>((res) => sh.once('exit', () => res()));
    const ready = new Promise<number>((resolve, reject) => {
      sh.stderr!.on('data', (d) => {
        stderr += d;
        for (const line of stderr.split('\n')) {
          try {
            const l = JSON.parse(line) as { msg?: string; pid?: number; component?: string };
            if (l.component === 'worker' && typeof l.pid === 'number' && /ready|serving|started|warm/i.test(l.msg ?? '')) resolve(l.pid);
          } catch {
            /* not a log line */
          }
        }
      });
      void exited.then(() => reject(new Error(`the worker exited before it was ready:\n${stderr}`)));
    });
    const workerPid = await ready;
    const shellPid = Number(/pid (\d+)/.exec(stdout)?.[1]);
    try {
      assert.equal(shellPid, workerPid, `the pid the shell gives is the worker's (${launcher} runs no child process)`);
    } catch (e) {
      process.kill(workerPid, 'SIGKILL');
      throw e;
    }
    process.kill(shellPid, 'SIGTERM');
    await exited;
    assert.match(stdout, /exit 0/, 'the worker exits cleanly on SIGTERM');
    assert.throws(() => process.kill(workerPid, 0), /ESRCH/, 'no worker process is left');
  } finally {
    await redis.stop();
  }
});
