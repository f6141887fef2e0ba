// Attention of one new token per row over a static KV cache, in one pass: for each row and query
// head, scores against the cached keys, softmax with the additive mask, and the weighted sum of the
// cached values. The stock formulation (broadcast multiply and sum) writes and rereads tensors the
// size of the cache per layer; this reads the cache once, and only the positions the mask lets the
// row see (a masked score is exactly 0 after softmax, so skipping it changes nothing).
#pragma once
#include <cstddef>

namespace attention {

// Whether this CPU runs the kernel (AVX2 and FMA).
bool supported();

// q [R, H, D]; k [R, KV, T, D]; vt [R, KV, D, T] (values transposed); bias [R, T], additive,
// `masked` or below where a position is hidden; out [R, H, D]. Query head h reads key/value head
// h / (H / KV) (grouped-query attention; KV == H without it).
void decode(const float* q, const float* k, const float* vt, const float* bias, float* out, size_t R, size_t H, size_t KV,
            size_t T, size_t D, float scale, float masked, int threads);

}  // namespace attention
