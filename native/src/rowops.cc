#include "rowops.h"

#include <cmath>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace rowops {

namespace {

#if defined(__x86_64__)
bool avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

// exp(x) for 8 floats: x = n ln2 + r (|r| <= ln2 / 2, ln2 split in two for the reduction),
// exp(r) by its degree-6 Taylor polynomial, times 2^n. Relative error about 2e-7; clamped to the
// float range (below -87.3 it returns about 1e-38, not 0, which the callers only add to 1).
__attribute__((target("avx2,fma"))) inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// out[i] = x[i] * sigmoid(z[i]) * (u ? u[i] : 1), 8 at a time; returns how many it did.
__attribute__((target("avx2,fma"))) size_t gated8(const float* x, const float* z, const float* u, float* out, size_t n) {
  const __m256 one = _mm256_set1_ps(1.f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(z + i)))));
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), s);
    if (u != nullptr) v = _mm256_mul_ps(v, _mm256_loadu_ps(u + i));
    _mm256_storeu_ps(out + i, v);
  }
  return i;
}
#endif

}  // namespace

void layerNorm(const float* x, const float* g, const float* b, float* out, size_t rows, size_t n, float eps) {
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += xr[i];
    const float mean = static_cast<float>(sum / n);
    double sq = 0;
    for (size_t i = 0; i < n; i++) {
      const float d = xr[i] - mean;
      sq += d * d;
    }
    const float inv = 1.f / std::sqrt(static_cast<float>(sq / n) + eps);
    for (size_t i = 0; i < n; i++) o[i] = (xr[i] - mean) * inv * g[i] + b[i];
  }
}

void rmsNorm(const float* x, const float* w, float* out, size_t rows, size_t n, float eps) {
  for (size_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    float* o = out + r * n;
    double sq = 0;
    for (size_t i = 0; i < n; i++) sq += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(static_cast<float>(sq / n) + eps);
    for (size_t i = 0; i < n; i++) o[i] = xr[i] * inv * w[i];
  }
}

void gelu(const float* x, float* out, size_t n) {
  const float a = 2 * std::sqrt(2 / M_PI), c = a * 0.044715f;
  size_t i = 0;
#if defined(__x86_64__)
  if (avx2()) {
    // z = x (a + c x^2) in blocks that stay in L1, then out = x * sigmoid(z)
    float z[1024];
    for (; i < n; i += 1024) {
      const size_t m = n - i < 1024 ? n - i : 1024;
      for (size_t j = 0; j < m; j++) z[j] = x[i + j] * (a + c * x[i + j] * x[i + j]);
      const size_t done = gated8(x + i, z, nullptr, out + i, m);
      for (size_t j = done; j < m; j++) out[i + j] = x[i + j] / (1.f + std::exp(-z[j]));
    }
    return;
  }
#endif
  for (; i < n; i++) {
    const float v = x[i];
    out[i] = v / (1.f + std::exp(-v * (a + c * v * v)));
  }
}

void siluMul(const float* g, const float* u, float* out, size_t n) {
  size_t i = 0;
#if defined(__x86_64__)
  if (avx2()) i = gated8(g, g, u, out, n);
#endif
  for (; i < n; i++) out[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

void rotary(const float* x, const float* cos, const float* sin, float* out, size_t positions, size_t heads, size_t D) {
  const size_t half = D / 2;
  for (size_t p = 0; p < positions; p++) {
    const float* c = cos + p * half;
    const float* s = sin + p * half;
    for (size_t h = 0; h < heads; h++) {
      const float* x1 = x + (p * heads + h) * D;
      const float* x2 = x1 + half;
      float* o = out + (p * heads + h) * D;
      for (size_t i = 0; i < half; i++) {
        o[i] = x1[i] * c[i] - x2[i] * s[i];
        o[half + i] = x2[i] * c[i] + x1[i] * s[i];
      }
    }
  }
}

}  // namespace rowops
