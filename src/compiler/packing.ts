/**
 * Host packing of a batch into the variant's fixed shapes, pure (typed arrays, no tensors). Each
 * prompt is left padded into the prompt bucket P, so every row's last prompt token sits at slot
 * P - 1 and decode step t writes slot P + t for all rows alike. Item b fills rows b*k .. b*k+k-1
 * (k beams per item, or 1).
 */

/** Additive bias of a masked key: large and finite, so exp() of a score plus it is 0. */
export const NEG = -1e9;

export interface PackedBatch {
  /** Rows: items × k. */
  R: number;
  /** Cache length: P + N. */
  T: number;
  /** [R, P] token ids, `pad` in the padding. */
  ids: Int32Array;
  /** [R, P] position of each slot: 0 .. len-1 over the prompt, 0 in the padding. */
  pos: Int32Array;
  /** [R, P] 1 for a prompt token, 0 for padding. */
  keyMask: Float32Array;
  /** [R, T] decode-step attention bias: 0 for a prompt slot, NEG elsewhere until a decode slot opens. */
  decodeBias: Float32Array;
  /** Prompt length of each row. */
  lens: Int32Array;
}

/** Packs `prompts` (one per item, each 1..P tokens) for a variant of buckets P, N and k rows per item. */
export function packBatch(prompts: readonly (readonly number[])[], P: number, N: number, k: number, pad: number): PackedBatch {
  const R = prompts.length * k;
  const T = P + N;
  const ids = new Int32Array(R * P).fill(pad);
  const pos = new Int32Array(R * P);
  const keyMask = new Float32Array(R * P);
  const decodeBias = new Float32Array(R * T).fill(NEG);
  const lens = new Int32Array(R);
  for (let r = 0; r < R; r++) {
    const prompt = prompts[Math.floor(r / k)];
    if (prompt.length > P) throw new RangeError(`prompt of ${prompt.length} tokens in bucket ${P}`);
    const off = P - prompt.length;
    lens[r] = prompt.length;
    prompt.forEach((id, j) => {
      ids[r * P + off + j] = id;
      pos[r * P + off + j] = j;
      keyMask[r * P + off + j] = 1;
      decodeBias[r * T + off + j] = 0;
    });
  }
  return { R, T, ids, pos, keyMask, decodeBias, lens };
}

/**
 * Opens cache slot P + t to attention in every row (the token fed at decode step t) and returns the
 * position of that token in each row: its prompt length + t.
 */
export function openDecodeSlot(b: PackedBatch, P: number, t: number): Int32Array {
  for (let r = 0; r < b.R; r++) b.decodeBias[r * b.T + P + t] = 0;
  return b.lens.map((len) => len + t);
}
