/**
 * The seam between the shared generate loop and a model family. A family brings its config parsing
 * (src/model), its weight names and shapes (*-weights.ts) and its forward: a DeviceModel, the
 * weights on the device with the two passes generation uses. Everything else (packing, KV cache,
 * processors, strategies, variants) is the same for every family.
 */
import type { tf } from './backend.js';
import { DeviceWeights } from './gpt2.js';
import type { KvCache } from './kv-cache.js';
import { LlamaDevice } from './llama.js';
import type { ModelArch } from '../model/arch.js';
import type { ModelFolder } from './types.js';

export interface DeviceModel {
  readonly arch: ModelArch;
  /** Bytes of the weights on the device. */
  readonly bytes: number;
  /**
   * The whole left-padded prompt. ids, pos: [R, P] int32 (positions from the mask); keyBias:
   * [R, 1, P, P] additive mask. Writes cache positions [0, P); returns the last position's logits [R, V].
   */
  prefill(cache: KvCache, ids: tf.Tensor2D, pos: tf.Tensor2D, keyBias: tf.Tensor4D): tf.Tensor2D;
  /**
   * One token per row. ids, pos: [R] int32; slot: the cache position written (the same for every
   * row); keyBias: [R, 1, T] over all cache positions. Returns logits [R, V].
   */
  decodeStep(cache: KvCache, ids: tf.Tensor1D, pos: tf.Tensor1D, slot: number, keyBias: tf.Tensor3D): tf.Tensor2D;
  dispose(): void;
}

/** Puts a folder's weights on the device as its family's model. */
export function toDevice(folder: ModelFolder): DeviceModel {
  return folder.family === 'gpt2' ? new DeviceWeights(folder.config, folder.weights) : new LlamaDevice(folder.config, folder.weights);
}
