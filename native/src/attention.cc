#include "attention.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cmath>
#include <vector>

namespace attention {

#if defined(__x86_64__)

namespace {

__attribute__((target("avx2,fma"))) float dot(const float* a, const float* b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  s0 = _mm256_add_ps(s0, s1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_hadd_ps(h, h);
  h = _mm_hadd_ps(h, h);
  float s = _mm_cvtss_f32(h);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// One row's query head against its key/value head. p: scratch of T floats.
void head(const float* q, const float* k, const float* vt, const float* bias, float* out, size_t T, size_t D, float scale,
          float masked, float* p) {
  // the positions the row sees lie in [lo, hi); with none (cannot happen in generation), all of them
  size_t lo = T, hi = 0;
  for (size_t t = 0; t < T; t++)
    if (bias[t] > masked) {
      if (lo == T) lo = t;
      hi = t + 1;
    }
  const bool none = lo == T;
  if (none) lo = 0, hi = T;
  float max = -INFINITY;
  for (size_t t = lo; t < hi; t++) {
    if (!none && bias[t] <= masked) {
      p[t] = -INFINITY;
      continue;
    }
    p[t] = dot(q, k + t * D, D) * scale + bias[t];
    if (p[t] > max) max = p[t];
  }
  float sum = 0;
  for (size_t t = lo; t < hi; t++) {
    p[t] = p[t] == -INFINITY ? 0.f : std::exp(p[t] - max);
    sum += p[t];
  }
  const float inv = 1.f / sum;
  for (size_t t = lo; t < hi; t++) p[t] *= inv;
  for (size_t d = 0; d < D; d++) out[d] = dot(p + lo, vt + d * T + lo, hi - lo);
}

}  // namespace

bool supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

void decode(const float* q, const float* k, const float* vt, const float* bias, float* out, size_t R, size_t H, size_t KV,
            size_t T, size_t D, float scale, float masked, int threads) {
  const size_t G = H / KV;
  const long n = static_cast<long>(R * H);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    std::vector<float> p(T);
#pragma omp for schedule(static)
    for (long i = 0; i < n; i++) {
      const size_t r = i / H, h = i % H, g = h / G;
      head(q + i * D, k + (r * KV + g) * T * D, vt + (r * KV + g) * D * T, bias + r * T, out + i * D, T, D, scale, masked, p.data());
    }
  }
}

#else  // the kernels are AVX2: elsewhere they are not offered (supported() is false)

bool supported() { return false; }
void decode(const float*, const float*, const float*, const float*, float*, size_t, size_t, size_t, size_t, size_t, float, float, int) {}

#endif

}  // namespace attention
