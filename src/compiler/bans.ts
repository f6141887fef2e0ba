/**
 * Tokens a row may not choose at the next step, decided on the host from its tokens so far:
 * Hugging Face's MinNewTokensLengthLogitsProcessor (EOS and stop ids until min_new_tokens tokens)
 * and NoRepeatNGramLogitsProcessor (a token that would repeat an n-gram of prompt + generated).
 * The device applies them as one fixed-shape scatter (see banTokens in logits.ts).
 */

/** Tokens that would complete an n-gram already in `tokens` (Hugging Face's no_repeat_ngram_size). */
export function repeatedNgramBans(tokens: readonly number[], n: number): number[] {
  if (n < 1 || tokens.length + 1 < n) return [];
  if (n === 1) return [...new Set(tokens)];
  const start = tokens.length - (n - 1); // the last n-1 tokens: the prefix of the next n-gram
  const out = new Set<number>();
  for (let i = 0; i + n - 1 < tokens.length; i++) {
    let same = true;
    for (let j = 0; j < n - 1 && same; j++) same = tokens[i + j] === tokens[start + j];
    if (same) out.add(tokens[i + n - 1]);
  }
  return [...out];
}

export interface BanParams {
  min_new_tokens?: number;
  no_repeat_ngram_size?: number;
  stop_ids: number[];
}

/** The banned next tokens of one row that has generated `generated` after `prompt`. */
export function bannedTokens(p: BanParams, prompt: readonly number[], generated: readonly number[]): number[] {
  const out = new Set<number>();
  if (generated.length < (p.min_new_tokens ?? 0)) for (const id of p.stop_ids) out.add(id);
  const n = p.no_repeat_ngram_size ?? 0;
  if (n > 0) for (const id of repeatedNgramBans([...prompt, ...generated], n)) out.add(id);
  return [...out];
}

/** Whether any row of a batch needs bans (the processor runs only then). */
export function needsBans(params: readonly BanParams[]): boolean {
  return params.some((p) => (p.min_new_tokens ?? 0) > 0 || (p.no_repeat_ngram_size ?? 0) > 0);
}
