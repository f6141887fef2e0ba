/** The limits table on both sides (request lines, job payloads), the bounded JSONL reader, and the TLS options. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { numberedLines, type NumberedLine } from '../../src/producer/jsonl.js';
import { LIMITS } from '../../src/shared/limits.js';
import { parseRequestLine } from '../../src/shared/requests.js';
import { checkPayload } from '../../src/worker/payload.js';
import { describeTlsFailure, tlsOptionsFor } from '../../src/shared/redis-tls.js';
import { BatchgenError } from '../../src/shared/errors.js';
import { redactUrl } from '../../src/shared/redis.js';

async function collect(chunks: (string | Buffer)[], limits = { maxLineBytes: 10, maxLinesPerBatch: 100 }): Promise<NumberedLine[]> {
  async function* src() {
    for (const c of chunks) yield typeof c === 'string' ? Buffer.from(c) : c;
  }
  const out: NumberedLine[] = [];
  for await (const l of numberedLines(src(), limits)) out.push(l);
  return out;
}

test('the reader splits lines across chunks, numbers them, skips blanks, and trims CRLF', async () => {
  const lines = await collect(['ab', 'c\r\n\n  d', 'e \nf']);
  assert.deepEqual(lines, [
    { line: 1, text: 'abc' },
    { line: 3, text: 'de' },
    { line: 4, text: 'f' },
  ]);
});

test('a line over maxLineBytes is skipped to its newline and reported with its size; its neighbours are read', async () => {
  // 25 bytes over three chunks, then a line at the limit exactly
  const lines = await collect(['ok\n0123456', '789012345678', '901234\n', '0123456789\nlast']);
  assert.deepEqual(lines, [
    { line: 1, text: 'ok' },
    { line: 2, text: '', rejected: 'too_long', bytes: 25 },
    { line: 3, text: '0123456789' },
    { line: 4, text: 'last' },
  ]);
  // bytes, not characters: 4 euro signs are 12 bytes
  const euro = await collect(['€€€€\n€€€\n']);
  assert.deepEqual(euro, [
    { line: 1, text: '', rejected: 'too_long', bytes: 12 },
    { line: 2, text: '€€€' },
  ]);
  // a multi-byte character split across chunks is decoded whole
  const split = Buffer.from('é\n');
  assert.deepEqual(await collect([split.subarray(0, 1), split.subarray(1)]), [{ line: 1, text: 'é' }]);
});

test('past maxLinesPerBatch, the next line is reported and nothing more is read', async () => {
  let pulled = 0;
  async function* src() {
    for (let i = 0; i < 1000; i++) {
      pulled += 1;
      yield Buffer.from(`l${i}\n\n`);
    }
  }
  const out: NumberedLine[] = [];
  for await (const l of numberedLines(src(), { maxLineBytes: 100, maxLinesPerBatch: 3 })) out.push(l);
  assert.deepEqual(out.at(-1), { line: 7, text: '', rejected: 'too_many' });
  assert.equal(out.length, 4);
  assert.equal(pulled, 4, 'the reader stopped reading');
});

test('request lines over a limit: one error each, naming the limit', () => {
  const line = (o: object) => parseRequestLine(JSON.stringify({ custom_id: 'c', model: 'm', prompt: 'p', ...o }), 9);
  const cases: [object, RegExp][] = [
    // 100k euro signs: 100k characters, 300k bytes
    [{ prompt: '€'.repeat(100_000) }, /300000 bytes, above the limit of 262144 \(maxPromptBytes\)/],
    [{ prompt: new Array(LIMITS.maxPromptTokens + 1).fill(1) }, /maxPromptTokens/],
    [{ max_new_tokens: LIMITS.maxNewTokens + 1 }, /maxNewTokens/],
    [{ stop_strings: ['a', 'b', 'c', 'd', 'e'] }, /maxStopStrings/],
    [{ stop_strings: ['x'.repeat(LIMITS.maxStopStringChars + 1)] }, /maxStopStringChars/],
    [{ stop_token_ids: new Array(LIMITS.maxStopTokenIds + 1).fill(1) }, /maxStopTokenIds/],
  ];
  for (const [o, re] of cases) {
    const p = line(o);
    assert.ok(!p.ok && p.counted, JSON.stringify(o).slice(0, 60));
    assert.match(p.error.error.message, re);
    assert.equal(p.error.line, 9);
  }
  // under the limits, the same fields pass
  assert.ok(line({ prompt: '€'.repeat(80_000), max_new_tokens: LIMITS.maxNewTokens, stop_strings: ['a', 'b', 'c', 'd'] }).ok);
  const cid = parseRequestLine(JSON.stringify({ custom_id: 'x'.repeat(257), model: 'm', prompt: 'p' }), 2);
  assert.ok(!cid.ok && !cid.counted);
  assert.equal(cid.error.custom_id, null);
  assert.match(cid.error.error.message, /257 characters, above the limit of 256 \(maxCustomIdChars\)/);
  const long = parseRequestLine(`{"custom_id":"c","model":"m","prompt":"${'a'.repeat(LIMITS.maxLineBytes)}"}`, 3);
  assert.ok(!long.ok && !long.counted);
  assert.match(long.error.error.message, /maxLineBytes/);
});

test('the worker checks payloads against the same limits', () => {
  const key = { model: 'tiny', P: 16, N: 16, strategy: 'greedy' as const };
  const payload = {
    v: 1,
    batch_id: 'b',
    custom_id: 'c',
    line: 1,
    form: 'native',
    model: 'tiny',
    key: 'tiny:p16:n16:greedy',
    prompt_ids: [1, 2],
    params: {
      max_new_tokens: 4,
      do_sample: false,
      temperature: 1,
      top_k: 0,
      top_p: 1,
      repetition_penalty: 1,
      seed: 1,
      num_beams: 1,
      length_penalty: 1,
      early_stopping: false,
      stop_ids: [0],
      pad_token_id: 0,
    },
    created_at: 1,
  };
  const limits = { key, contextLength: 128, vocabSize: 100 };
  assert.ok(checkPayload('b/c', payload, limits).ok);
  const cases: [object, RegExp][] = [
    [{ prompt_ids: new Array(LIMITS.maxPromptTokens + 1).fill(1) }, /maxPromptTokens/],
    [{ params: { ...payload.params, max_new_tokens: LIMITS.maxNewTokens + 1 } }, /maxNewTokens/],
    [{ params: { ...payload.params, stop_strings: ['a', 'b', 'c', 'd', 'e'] } }, /maxStopStrings/],
    [{ custom_id: 'x'.repeat(300) }, /maxCustomIdChars/],
    [{ params: { ...payload.params, stop_ids: new Array(LIMITS.maxPayloadStopIds + 1).fill(0) } }, /stop_ids/],
  ];
  for (const [o, re] of cases) {
    const r = checkPayload(undefined, { ...payload, ...o }, limits);
    assert.ok(!r.ok);
    assert.match(r.reason, re);
  }
});

test('TLS options: files read for rediss://, refused for redis://, errors named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'batchgen-tls-unit-'));
  try {
    writeFileSync(join(dir, 'ca.pem'), 'CA');
    assert.equal(tlsOptionsFor('redis://h:1', {}), undefined);
    assert.deepEqual(tlsOptionsFor('rediss://h:1', {}), { rejectUnauthorized: true });
    assert.equal(String(tlsOptionsFor('rediss://h:1', { ca: join(dir, 'ca.pem') })?.ca), 'CA');
    const fails: [string, object, RegExp][] = [
      ['redis://h:1', { ca: join(dir, 'ca.pem') }, /BATCHGEN_REDIS_CA set, but the Redis URL is not rediss/],
      ['rediss://h:1', { ca: join(dir, 'missing.pem') }, /BATCHGEN_REDIS_CA=.*missing.pem: cannot read the ca file \(ENOENT\)/],
      ['rediss://h:1', { cert: join(dir, 'ca.pem') }, /go together/],
    ];
    for (const [url, files, re] of fails) {
      assert.throws(
        () => tlsOptionsFor(url, files),
        (e: unknown) => e instanceof BatchgenError && e.code === 'invalid_config' && re.test(e.message),
      );
    }
    assert.match(
      describeTlsFailure({ message: 'self-signed certificate in certificate chain', code: 'SELF_SIGNED_CERT_IN_CHAIN' }, {})!,
      /does not verify against the CAs Node trusts/,
    );
    assert.equal(describeTlsFailure({ message: 'connect ECONNREFUSED 127.0.0.1:1', code: 'ECONNREFUSED' }, {}), null);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('URLs are redacted whatever the user part', () => {
  assert.equal(redactUrl('redis://u:p%40ss@h:1/0'), 'redis://u:***@h:1/0');
  assert.equal(redactUrl('rediss://:secret@h:1'), 'rediss://:***@h:1');
  assert.equal(redactUrl('redis://h:1'), 'redis://h:1');
});
