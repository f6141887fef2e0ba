// Skinny matmuls over weights packed in 8-column panels: out[M, N] = x[M, K] @ W[K, N] (+ bias),
// for the few rows of a decode step. At 8 rows a step is bound by reading the weights from memory
// (each weight is read once per step), and oneDNN 2.x's jit sgemm reads them at a third of the
// memory's speed here; this kernel reads each panel once, in order, with a software prefetch ahead
// of it, and uses each loaded weight for up to 8 rows (from 12 rows, where compute is the limit,
// blocks of 6 rows against two panels).
#pragma once
#include <cstddef>

namespace panels {

// Whether this CPU runs the kernel (AVX2 and FMA).
bool supported();

// Floats a packed copy of a [K, N] weight takes (N rounded up to whole panels).
size_t packedFloats(size_t K, size_t N);

// Packs W ([K, N] row-major, or [N, K] row-major when transposed) into `out` (packedFloats floats,
// 32-byte aligned): panel j holds columns [8j, 8j+8) as K rows of 8, zero past N.
void pack(const float* W, size_t K, size_t N, bool transposed, float* out);

// out[M, N] = x[M, K] @ packed (+ bias[N] when bias is not null). Rows of x and out are contiguous.
void run(const float* x, size_t M, size_t K, size_t N, const float* packed, const float* bias, float* out, int threads);

}  // namespace panels
