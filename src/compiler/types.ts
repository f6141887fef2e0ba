import type { ModelMeta } from '../model/info.js';
import type { ResolvedParams } from '../shared/params.js';

/** One transformer block's weights, in Hugging Face's Conv1D layout ([in, out]), as float32. */
export interface Gpt2BlockWeights {
  ln1g: Float32Array; // [E]
  ln1b: Float32Array; // [E]
  attnW: Float32Array; // [E, 3E]  (c_attn)
  attnB: Float32Array; // [3E]
  projW: Float32Array; // [E, E]   (attn.c_proj)
  projB: Float32Array; // [E]
  ln2g: Float32Array; // [E]
  ln2b: Float32Array; // [E]
  fcW: Float32Array; // [E, 4E]   (mlp.c_fc)
  fcB: Float32Array; // [4E]
  fcProjW: Float32Array; // [4E, E] (mlp.c_proj)
  fcProjB: Float32Array; // [E]
}

export interface Gpt2Weights {
  wte: Float32Array; // [V, E]
  wpe: Float32Array; // [n_positions, E]
  lnFg: Float32Array; // [E]
  lnFb: Float32Array; // [E]
  /** [V, E]; null when the folder has no lm_head.weight (tied to wte, as GPT-2 is). */
  lmHead: Float32Array | null;
  blocks: Gpt2BlockWeights[];
}

/** One Llama-family decoder layer, in nn.Linear layout ([out, in]); a bias is null where the config has none. */
export interface LlamaBlockWeights {
  inputNorm: Float32Array; // [E]
  qW: Float32Array; // [H*D, E]
  qB: Float32Array | null;
  kW: Float32Array; // [KV*D, E]
  kB: Float32Array | null;
  vW: Float32Array; // [KV*D, E]
  vB: Float32Array | null;
  oW: Float32Array; // [E, H*D]
  oB: Float32Array | null;
  postNorm: Float32Array; // [E]
  gateW: Float32Array; // [I, E]
  gateB: Float32Array | null;
  upW: Float32Array; // [I, E]
  upB: Float32Array | null;
  downW: Float32Array; // [E, I]
  downB: Float32Array | null;
}

export interface LlamaWeights {
  embed: Float32Array; // [V, E]
  norm: Float32Array; // [E]
  /** [V, E]; null when tied to the embedding. */
  lmHead: Float32Array | null;
  blocks: LlamaBlockWeights[];
}

/** A GPT-2 folder read and checked: its metadata and float32 weights. */
export type Gpt2Folder = ModelMeta & { family: 'gpt2'; weights: Gpt2Weights };
/** A Llama-family folder read and checked. */
export type LlamaFolder = ModelMeta & { family: 'llama'; weights: LlamaWeights };
/** A model folder read and checked: its metadata and float32 weights, by family. */
export type ModelFolder = Gpt2Folder | LlamaFolder;

/** One row of a batch: a prompt's token ids (unpadded) and its resolved parameters. */
export interface RowRequest {
  promptIds: number[];
  params: ResolvedParams;
}

/** `eos`: an EOS or stop id; `stop`: a stop string; `length`: max_new_tokens reached. */
export type FinishReason = 'eos' | 'stop' | 'length';

export interface RowResult {
  /**
   * Generated ids only; the stop id is included when one was produced, and for a stop string the
   * ids up to and including the token that completed it.
   */
  tokenIds: number[];
  finishReason: FinishReason;
  /** For finishReason 'stop': the decoded text, cut before the stop string. */
  text?: string;
}
