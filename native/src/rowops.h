// The element-wise and per-row parts of a transformer layer as one pass each, on float32 rows:
// in tfjs ops a layer norm is ten kernels and GELU five, each a pass over the activations and a
// dispatch, which at the few rows of a decode step costs more than the arithmetic.
#pragma once
#include <cstddef>

namespace rowops {

// out = (x - mean) / sqrt(var + eps) * g + b over each row of width n (var: the biased variance).
void layerNorm(const float* x, const float* g, const float* b, float* out, size_t rows, size_t n, float eps);

// out = x / sqrt(mean(x^2) + eps) * w over each row (Llama's RMSNorm).
void rmsNorm(const float* x, const float* w, float* out, size_t rows, size_t n, float eps);

// GPT-2's tanh GELU ("gelu_new"), as x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), the same function.
void gelu(const float* x, float* out, size_t n);

// out = silu(g) * u = g * sigmoid(g) * u (Llama's gated MLP).
void siluMul(const float* g, const float* u, float* out, size_t n);

// Rotary embedding in the rotate_half layout: x [positions, heads, D], cos and sin [positions, D/2];
// out = x·cos + rotate_half(x)·sin, rotate_half(x) = cat(-x2, x1) of the two halves of each head.
void rotary(const float* x, const float* cos, const float* sin, float* out, size_t positions, size_t heads, size_t D);

}  // namespace rowops
