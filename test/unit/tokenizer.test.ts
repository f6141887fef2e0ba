import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gpt2TokenizerJson, loadTokenizer } from '../../src/model/tokenizer.js';
import { ModelFormatError } from '../../src/shared/errors.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'batchgen-tok-'));
const file = path.join(dir, 'tokenizer.json');
fs.writeFileSync(file, gpt2TokenizerJson());

test('gpt2TokenizerJson has the layout of Hugging Face GPT-2', () => {
  const doc = JSON.parse(fs.readFileSync(file, 'utf-8'));
  assert.equal(doc.version, '1.0');
  assert.deepEqual(doc.added_tokens, [
    { id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
  ]);
  assert.deepEqual(doc.pre_tokenizer, { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true });
  assert.equal(doc.post_processor.type, 'ByteLevel');
  assert.equal(doc.decoder.type, 'ByteLevel');
  assert.equal(doc.model.type, 'BPE');
  assert.equal(Object.keys(doc.model.vocab).length, 50257);
  assert.equal(doc.model.vocab['<|endoftext|>'], 50256);
  assert.equal(doc.model.merges.length, 50000);
  assert.equal(doc.model.merges[0], 'Ġ t');
  // Vocabulary written in id order, as in the original file (JSON.parse would reorder "0", "1", ...).
  assert.ok(fs.readFileSync(file, 'utf-8').includes('"vocab":{"!":0,"\\"":1,"#":2,'));
});

test('encodes "TensorFlow is" as GPT-2 does, without special tokens', async () => {
  const tok = await loadTokenizer(file);
  assert.deepEqual(await tok.encode('TensorFlow is'), [51, 22854, 37535, 318]);
  assert.deepEqual(await tok.encode('Hello world'), [15496, 995]);
  assert.deepEqual(await tok.encode(''), []);
});

test('decode round-trips text', async () => {
  const tok = await loadTokenizer(file);
  for (const text of ['TensorFlow is', ' leading and trailing  ', "it's 12,345.\n\tnew line", 'ñ 日本語 🤖 façade', 'a\u00a0b\r\n']) {
    assert.equal(await tok.decode(await tok.encode(text)), text);
  }
});

test('decode drops special tokens (a generated EOS is not text)', async () => {
  const tok = await loadTokenizer(file);
  assert.equal(await tok.decode([51, 22854, 37535, 318, 50256]), 'TensorFlow is');
});

test('a missing or broken tokenizer.json is a ModelFormatError naming the file', async () => {
  const missing = path.join(dir, 'nope', 'tokenizer.json');
  await assert.rejects(
    loadTokenizer(missing),
    (e: unknown) => e instanceof ModelFormatError && e.message.startsWith(missing) && /not found/.test(e.message),
  );
  const broken = path.join(dir, 'broken.json');
  fs.writeFileSync(broken, '{"version": "1.0", "model": 42}');
  await assert.rejects(loadTokenizer(broken), (e: unknown) => e instanceof ModelFormatError && e.message.startsWith(broken));
});
