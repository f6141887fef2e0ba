/**
 * Authentication, ACLs and TLS, against real redis-servers and real worker processes: password
 * URLs for every command, the SDK and the workers; the least ACL of the README for each role, and
 * refusals outside it; passwords nowhere (logs, keys in Redis, /metrics, /healthz, errors);
 * rediss:// with certificates made here by openssl, a CA that does not verify, client certificates.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { freePort, hasRedisServer, startRedisServer, type RedisServer } from '../helpers/redis-server.js';
import { ROOT, ensureTinyModel, runCli, spawnWorker, type WorkerProcess } from '../helpers/processes.js';
import { GenerationClient } from '../../src/producer/client.js';
import { connectRedis } from '../../src/shared/redis.js';

const hasOpenssl = spawnSync('sh', ['-c', 'command -v openssl'], { encoding: 'utf8' }).status === 0;
const skip = (!hasRedisServer() && 'redis-server is not installed') || (!hasOpenssl && 'openssl is not installed');
const quiet = pino({ level: 'silent' });
let model: string;
let tmp: string;
const workers: WorkerProcess[] = [];
const cleanups: (() => Promise<void> | void)[] = [];

before(() => {
  if (skip) return;
  model = ensureTinyModel(join(tmpdir(), 'batchgen-test-models', 'tiny-l2-e64'));
  tmp = mkdtempSync(join(tmpdir(), 'batchgen-security-'));
});

after(async () => {
  for (const w of workers) await w.stop(5000);
  for (const c of cleanups.reverse()) await c();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function worker(url: string, extra: string[], env: Record<string, string> = {}): WorkerProcess {
  const w = spawnWorker(url, [`tiny=${model}`], extra, env);
  workers.push(w);
  return w;
}

/** A JSONL file of n requests `<prefix><i>`, plus optional extra lines; returns its path and the ids it asks for. */
function inputFile(name: string, n: number, extra: object[] = []): { file: string; ids: string[] } {
  const reqs = [
    ...Array.from({ length: n }, (_, i) => ({ custom_id: `${name}${i}`, model: 'tiny', prompt: `request ${i}`, max_new_tokens: 4 })),
    ...extra,
  ];
  const file = join(tmp, `${name}.jsonl`);
  writeFileSync(file, `${reqs.map((r) => JSON.stringify(r)).join('\n')}\n`);
  return { file, ids: reqs.map((r) => (r as { custom_id: string }).custom_id) };
}

/** Every acknowledged request has exactly one result or one error, none twice, and nothing else is settled. */
async function ledger(c: GenerationClient, batchId: string, ids: string[]): Promise<{ results: number; errors: number }> {
  const seen: string[] = [];
  let results = 0;
  for await (const chunk of c.store.results(batchId)) {
    results += chunk.length;
    seen.push(...chunk.map((r) => r.custom_id));
  }
  const errs = (await c.store.errors(batchId)).filter((e) => e.custom_id !== null);
  seen.push(...errs.map((e) => e.custom_id!));
  assert.deepEqual([...seen].sort(), [...ids].sort(), `batch ${batchId}: one result or one error per request`);
  return { results, errors: errs.length };
}

/** The least ACL lines of the README, with the password filled in. */
function readmeAcl(user: 'batchgen-producer' | 'batchgen-worker', password: string): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const line = readme.split('\n').find((l) => l.startsWith(`ACL SETUSER ${user} `));
  assert.ok(line, `README has the ACL of ${user}`);
  const words = line.split(/\s+/).slice(3);
  assert.ok(words.some((w) => w.startsWith('>')));
  return words.map((w) => (w.startsWith('>') ? `>${password}` : w));
}

/** Every string value under every key of a Redis, as text (strings, hashes, lists, sets, zsets, streams). */
async function dumpRedis(r: Redis): Promise<string> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await r.scan(cursor, 'MATCH', '*', 'COUNT', 1000);
    cursor = next;
    for (const k of keys) {
      const type = await r.type(k);
      out.push(k);
      if (type === 'string') out.push((await r.get(k)) ?? '');
      else if (type === 'hash') out.push(JSON.stringify(await r.hgetall(k)));
      else if (type === 'list') out.push(JSON.stringify(await r.lrange(k, 0, -1)));
      else if (type === 'set') out.push(JSON.stringify(await r.smembers(k)));
      else if (type === 'zset') out.push(JSON.stringify(await r.zrange(k, '0', '-1')));
      else if (type === 'stream') out.push(JSON.stringify(await r.xrange(k, '-', '+')));
    }
  } while (cursor !== '0');
  return out.join('\n');
}

test('password URLs and the least ACL of the README: each role works, is refused outside it, and no password is written anywhere', {
  skip,
  timeout: 120_000,
}, async () => {
  const redis: RedisServer = await startRedisServer(['--maxmemory-policy', 'noeviction']);
  cleanups.push(() => redis.stop());
  const admin = new Redis(redis.url);
  cleanups.push(() => admin.disconnect());
  const host = `127.0.0.1:${redis.port}`;
  // passwords with characters a URL must encode
  const pw = { admin: 'adm1n/Pa55:x', producer: 'pr0d@Secret-4417', worker: 'w0rk@Secret-9902', noinfo: 'n0info-Secret-55' };
  const enc = (s: string) => encodeURIComponent(s);
  await admin.call('ACL', 'SETUSER', 'batchgen-producer', ...readmeAcl('batchgen-producer', pw.producer));
  await admin.call('ACL', 'SETUSER', 'batchgen-worker', ...readmeAcl('batchgen-worker', pw.worker));
  // the producer's ACL without INFO: a user lacking a command BullMQ needs
  const noInfo = readmeAcl('batchgen-producer', pw.noinfo).filter((w) => w !== '+info');
  await admin.call('ACL', 'SETUSER', 'noinfo', ...noInfo);
  await admin.call('ACL', 'SETUSER', 'default', 'on', `>${pw.admin}`);
  const adminUrl = `redis://:${enc(pw.admin)}@${host}`;
  const producerUrl = `redis://batchgen-producer:${enc(pw.producer)}@${host}/0`;
  const workerUrl = `redis://batchgen-worker:${enc(pw.worker)}@${host}`;

  // two workers with the worker ACL, one per key form; each serves /metrics
  const ports = [await freePort(), await freePort()];
  const wPlain = worker(workerUrl, ['--id', 'acl-plain', '--metrics-port', String(ports[0])]);
  const wTag = worker(workerUrl, ['--id', 'acl-tag', '--hash-tag', '--metrics-port', String(ports[1])]);
  await Promise.all([wPlain.waitForMsg('worker starting'), wTag.waitForMsg('worker starting')]);
  // no CONFIG in the ACL: the eviction check warns and the worker goes on
  for (const w of [wPlain, wTag]) assert.ok(w.logs.some((l) => /could not read Redis maxmemory-policy/.test(String(l.msg))));

  const outputs: string[] = [];
  const batches: { id: string; ids: string[]; hashTag: boolean }[] = [];
  for (const hashTag of [false, true]) {
    const name = hashTag ? 'tag' : 'plain';
    // one line over a limit: an error message of its own, checked for the password like the rest
    const { file, ids } = inputFile(name, 5, [{ custom_id: `${name}-big`, model: 'tiny', prompt: 'x', max_new_tokens: 9000 }]);
    const out = join(tmp, `${name}.results.jsonl`);
    const errors = join(tmp, `${name}.errors.jsonl`);
    const r = runCli(
      [
        'submit',
        file,
        '--model',
        `tiny=${model}`,
        '--wait',
        '--timeout',
        '60',
        '--out',
        out,
        '--errors',
        errors,
        ...(hashTag ? ['--hash-tag'] : []),
      ],
      { env: { REDIS_URL: producerUrl, BATCHGEN_LOG_LEVEL: 'debug' } },
    );
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    batches.push({ id, ids, hashTag });
    assert.equal(readFileSync(out, 'utf8').trim().split('\n').length, 5);
    assert.match(readFileSync(errors, 'utf8'), /maxNewTokens/);
    outputs.push(r.stdout, r.stderr, readFileSync(out, 'utf8'), readFileSync(errors, 'utf8'));
    // the read-only commands, with the producer's ACL
    for (const cmd of hashTag ? [] : [['status', id, '--json'], ['list']]) {
      const q = runCli([...cmd, ...(hashTag ? ['--hash-tag'] : [])], { env: { REDIS_URL: producerUrl } });
      assert.equal(q.code, 0, `${cmd[0]}: ${q.stderr}`);
      outputs.push(q.stdout, q.stderr);
    }
  }
  // the SDK, with the password URL
  const sdk = await GenerationClient.connect({ redisUrl: producerUrl, models: [{ name: 'tiny', dir: model }], logger: quiet });
  cleanups.push(() => sdk.close());
  const g = await sdk.generate({ custom_id: 'sdk1', model: 'tiny', prompt: 'hello', max_new_tokens: 3 });
  assert.equal(g.custom_id, 'sdk1');

  // every place a password could end up, while the workers run
  for (const p of ports) {
    outputs.push(await (await fetch(`http://127.0.0.1:${p}/metrics`)).text());
    outputs.push(await (await fetch(`http://127.0.0.1:${p}/healthz`)).text());
  }
  await Promise.all([wPlain.stop(), wTag.stop()]);

  // refusals, each with its cause
  const refusals: [string, string[], Record<string, string>, RegExp][] = [
    ['no password', ['status', 'x'], { REDIS_URL: `redis://${host}` }, /\[redis_auth_failed\].*NOAUTH/],
    [
      'wrong password',
      ['status', 'x'],
      { REDIS_URL: `redis://batchgen-producer:${enc(pw.worker)}@${host}` },
      /\[redis_auth_failed\].*WRONGPASS/,
    ],
    [
      'a user without INFO',
      ['submit', inputFile('noinfo', 1).file, '--model', `tiny=${model}`],
      { REDIS_URL: `redis://noinfo:${pw.noinfo}@${host}` },
      /\[redis_permission_denied\].*NOPERM.*'info' command/,
    ],
    [
      'a key outside the ACL patterns',
      ['submit', inputFile('outside', 1).file, '--model', `tiny=${model}`, '--prefix', 'other'],
      { REDIS_URL: producerUrl },
      /\[redis_permission_denied\].*NOPERM.*keys/,
    ],
  ];
  for (const [what, args, env, re] of refusals) {
    const r = runCli(args, { env });
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, re, what);
    assert.equal(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('batchgen ')).length,
      1,
      `${what}: one error line`,
    );
    outputs.push(r.stdout, r.stderr);
  }
  // a worker with a wrong password, and one outside its key patterns, stop with the cause
  const badPw = worker(`redis://batchgen-worker:${enc(pw.producer)}@${host}`, ['--id', 'bad-pw']);
  const outside = worker(workerUrl, ['--id', 'outside', '--prefix', 'other']);
  for (const [w, re] of [
    [badPw, /\[redis_auth_failed\].*WRONGPASS/],
    [outside, /\[redis_permission_denied\].*NOPERM/],
  ] as const) {
    const exit = await w.exited;
    assert.equal(exit.code, 1, w.stderr.join('\n'));
    assert.ok(
      w.stderr.some((l) => re.test(l)),
      w.stderr.join('\n'),
    );
  }
  // nothing was written with the ACL users outside the prefix
  assert.deepEqual(await admin.keys('other*'), []);

  const c = await GenerationClient.connect({ redisUrl: adminUrl, logger: quiet });
  cleanups.push(() => c.close());
  for (const b of batches) {
    const kc = b.hashTag ? await GenerationClient.connect({ redisUrl: adminUrl, hashTag: true, logger: quiet }) : c;
    const n = await ledger(kc, b.id, b.ids);
    assert.deepEqual([n.results, n.errors], [5, 1]);
    if (kc !== c) await kc.close();
  }
  assert.ok((await admin.keys('{batchgen}:*')).length > 0, 'the hash-tag batch used the {batchgen} form');

  outputs.push(await dumpRedis(admin));
  for (const w of workers) outputs.push(...w.stderr);
  const all = outputs.join('\n');
  assert.ok(all.includes('batchgen-worker:***@'), 'the worker logged its URL, redacted');
  for (const secret of Object.values(pw)) {
    for (const form of new Set([secret, enc(secret)]))
      assert.ok(!all.includes(form), `a password appears in the output (${form.length} chars)`);
  }
});

// ---------------------------------------------------------------------------------------------
// TLS

interface Certs {
  dir: string;
  ca: string;
  otherCa: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and an unrelated CA. */
function makeCerts(dir: string): Certs {
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(dir, ['req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=batchgen test CA']);
  openssl(dir, ['req', '-x509', ...key, '-keyout', 'other-ca.key', '-out', 'other-ca.crt', '-days', '2', '-subj', '/CN=another CA']);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const who of ['server', 'client']) {
    openssl(dir, ['req', ...key, '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`]);
    openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${who}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${who}.crt`,
      '-days',
      '2',
      '-extfile',
      `${who}.ext`,
    ]);
  }
  const f = (n: string) => join(dir, n);
  return {
    dir,
    ca: f('ca.crt'),
    otherCa: f('other-ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
  };
}

/** redis-server with TLS only (`--port 0`); resolves once it answers PING over TLS. */
async function startTlsRedis(certs: Certs, authClients: boolean): Promise<{ url: string; port: number; stop: () => Promise<void> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-redis-tls-'));
  const proc: ChildProcess = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--maxmemory-policy',
      'noeviction',
      '--tls-cert-file',
      certs.serverCert,
      '--tls-key-file',
      certs.serverKey,
      '--tls-ca-cert-file',
      certs.ca,
      '--tls-auth-clients',
      authClients ? 'yes' : 'no',
    ],
    { stdio: 'ignore' },
  );
  const url = `rediss://127.0.0.1:${port}`;
  const stop = async () => {
    if (proc.exitCode === null) {
      const exited = new Promise<void>((res) => proc.once('exit', () => res()));
      proc.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const files = { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey };
  for (let i = 0; ; i++) {
    try {
      const r = await connectRedis({ url, tls: files, connectTimeoutMs: 1000 });
      await r.ping();
      r.disconnect();
      break;
    } catch (e) {
      if (i > 100 || proc.exitCode !== null) {
        await stop();
        throw e;
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  }
  return { url, port, stop };
}

test('rediss://: a worker and a submit over TLS (BATCHGEN_REDIS_CA, NODE_EXTRA_CA_CERTS); a CA that does not verify, and a missing client certificate, refused clearly', {
  skip,
  timeout: 120_000,
}, async () => {
  const certs = makeCerts(mkdtempSync(join(tmp, 'certs-')));
  const tlsRedis = await startTlsRedis(certs, false);
  cleanups.push(() => tlsRedis.stop());
  const mtls = await startTlsRedis(certs, true);
  cleanups.push(() => mtls.stop());

  // the worker trusts the CA through BATCHGEN_REDIS_CA, the submit through NODE_EXTRA_CA_CERTS
  const w = worker(tlsRedis.url, ['--id', 'tls-worker'], { BATCHGEN_REDIS_CA: certs.ca });
  await w.waitForMsg('worker starting');
  const { file, ids } = inputFile('tls', 6);
  const out = join(tmp, 'tls.results.jsonl');
  const r = runCli(['submit', file, '--model', `tiny=${model}`, '--wait', '--timeout', '60', '--out', out], {
    env: { REDIS_URL: tlsRedis.url, NODE_EXTRA_CA_CERTS: certs.ca },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(readFileSync(out, 'utf8').trim().split('\n').length, 6);
  // the host name form of the URL verifies too (the certificate names localhost)
  const byName = runCli(['list'], { env: { REDIS_URL: `rediss://localhost:${tlsRedis.port}`, BATCHGEN_REDIS_CA: certs.ca } });
  assert.equal(byName.code, 0, byName.stderr);
  assert.match(byName.stdout, new RegExp(r.stdout.trim()));

  const refusals: [string, string, Record<string, string>, RegExp][] = [
    ['no CA', tlsRedis.url, {}, /\[redis_tls_failed\].*does not verify against the CAs Node trusts/],
    [
      'another CA',
      tlsRedis.url,
      { BATCHGEN_REDIS_CA: certs.otherCa },
      /\[redis_tls_failed\].*does not verify against the CA in BATCHGEN_REDIS_CA/,
    ],
    ['plain redis:// to the TLS port', `redis://127.0.0.1:${tlsRedis.port}`, {}, /\[redis_unavailable\].*use rediss:\/\//],
    [
      'a CA file set for a plain URL',
      `redis://127.0.0.1:${tlsRedis.port}`,
      { BATCHGEN_REDIS_CA: certs.ca },
      /\[invalid_config\].*not rediss/,
    ],
    ['no client certificate', mtls.url, { BATCHGEN_REDIS_CA: certs.ca }, /\[redis_tls_failed\].*BATCHGEN_REDIS_CERT/],
  ];
  for (const [what, url, env, re] of refusals) {
    const q = runCli(['status', 'x'], { env: { REDIS_URL: url, ...env }, timeoutMs: 20_000 });
    assert.equal(q.code, 1, `${what}: ${q.stderr}`);
    assert.match(q.stderr, re, what);
  }
  const withCert = runCli(['list'], {
    env: { REDIS_URL: mtls.url, BATCHGEN_REDIS_CA: certs.ca, BATCHGEN_REDIS_CERT: certs.clientCert, BATCHGEN_REDIS_KEY: certs.clientKey },
  });
  assert.equal(withCert.code, 0, withCert.stderr);
  // a worker that does not trust the server stops with the cause
  const bad = worker(tlsRedis.url, ['--id', 'tls-bad'], { BATCHGEN_REDIS_CA: certs.otherCa });
  assert.equal((await bad.exited).code, 1);
  assert.ok(
    bad.stderr.some((l) => /\[redis_tls_failed\]/.test(l)),
    bad.stderr.join('\n'),
  );

  const c = await GenerationClient.connect({ redisUrl: tlsRedis.url, logger: quiet, redisTls: { ca: certs.ca } });
  cleanups.push(() => c.close());
  const n = await ledger(c, r.stdout.trim(), ids);
  assert.deepEqual([n.results, n.errors], [6, 0]);
});
