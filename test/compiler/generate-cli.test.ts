// `batchgen generate` as a user runs it: the JSON lines of the contract, equal to the in-process
// API, and clear errors (non-zero exit, the flag named) on bad flags.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { generateRows, loadModel, makeModel } from '../../src/compiler/index.js';
import { resolveParams } from '../../src/shared/params.js';

const bin = fileURLToPath(new URL('../../../bin/batchgen.js', import.meta.url));
let dir: string;

function cli(args: string[]) {
  const r = spawnSync(process.execPath, [bin, 'generate', '--model', dir, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'batchgen-generate-cli-'));
  await makeModel({ out: dir, layers: 2, heads: 2, embd: 32, positions: 128, seed: 3 });
});

after(() => rmSync(dir, { recursive: true, force: true }));

test('generate --json: one line per prompt, the same tokens as the in-process API', async () => {
  const prompts = ['TensorFlow is', 'A much longer prompt that lands in the same padded batch as the short one'];
  const r = cli([...prompts.flatMap((p) => ['--prompt', p]), '--max-new-tokens', '6', '--repetition-penalty', '1.2', '--json']);
  assert.equal(r.code, 0, r.err);
  const lines = r.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(lines.length, 2);
  assert.deepEqual(lines[0].prompt_token_ids, [51, 22854, 37535, 318]);

  const model = await loadModel(dir);
  try {
    const params = resolveParams({ max_new_tokens: 6, repetition_penalty: 1.2 }, model.defaults);
    const encoded = await Promise.all(prompts.map((p) => model.folder.tokenizer.encode(p)));
    const expected = await generateRows(
      model,
      encoded.map((promptIds) => ({ promptIds, params })),
    );
    for (let i = 0; i < prompts.length; i++) {
      assert.equal(lines[i].prompt, prompts[i]);
      assert.deepEqual(lines[i].prompt_token_ids, encoded[i]);
      assert.deepEqual(lines[i].token_ids, expected[i].tokenIds);
      assert.equal(lines[i].finish_reason, expected[i].finishReason);
      assert.equal(lines[i].text, await model.folder.tokenizer.decode(expected[i].tokenIds));
    }
  } finally {
    model.dispose();
  }
});

test('generate: bad flags fail with the flag named, and nothing on stdout', () => {
  const cases: [string[], RegExp][] = [
    [['--prompt', 'x', '--top-p', '2'], /--top-p/],
    [['--prompt', 'x', '--temperature', 'hot'], /--temperature hot: expected a number/],
    [['--prompt', 'x', '--early-stopping', 'maybe'], /--early-stopping maybe/],
    [['--prompt', 'x', '--num-beams', '2', '--do-sample'], /beam sampling/],
    [[], /--prompt/],
  ];
  for (const [args, message] of cases) {
    const r = cli(args);
    assert.notEqual(r.code, 0, `exit 0 for ${args.join(' ')}`);
    assert.match(r.err, message);
    assert.equal(r.out, '');
  }
});

test('generate: a prompt longer than half the context runs; one that does not fit is a one-line context_length_exceeded', () => {
  const long = Array.from({ length: 67 }, () => ' a').join(''); // 67 tokens
  const r = cli(['--prompt', long, '--max-new-tokens', '4', '--json']);
  assert.equal(r.code, 0, r.err);
  const [line] = r.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  assert.equal(line.prompt_token_ids.length, 67);
  assert.ok(line.token_ids.length >= 1 && line.token_ids.length <= 4);
  const tooLong = cli(['--prompt', long, '--max-new-tokens', '62']);
  assert.equal(tooLong.code, 1);
  assert.equal(tooLong.out, '');
  assert.equal(tooLong.err.trim().split('\n').length, 1, tooLong.err);
  assert.match(
    tooLong.err,
    /^batchgen generate: error \[context_length_exceeded\]: prompt of 67 tokens plus max_new_tokens 62 exceeds the model's context of 128/,
  );
});

test('generate --stop: the text ends before the stop string, finish_reason stop', () => {
  const base = cli(['--prompt', 'TensorFlow is', '--max-new-tokens', '10', '--json']);
  assert.equal(base.code, 0, base.err);
  const full = JSON.parse(base.out);
  const stop = full.text.slice(Math.floor(full.text.length / 2), Math.floor(full.text.length / 2) + 2);
  const r = cli(['--prompt', 'TensorFlow is', '--max-new-tokens', '10', '--stop', stop, '--stop', 'zzz-never', '--json']);
  assert.equal(r.code, 0, r.err);
  const line = JSON.parse(r.out);
  assert.equal(line.finish_reason, 'stop');
  assert.equal(line.text, full.text.slice(0, full.text.indexOf(stop)));
  assert.deepEqual(line.token_ids, full.token_ids.slice(0, line.token_ids.length));
});
