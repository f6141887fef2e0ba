#include "panels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstring>

namespace panels {

#if defined(__x86_64__)

namespace {

constexpr size_t NR = 8;  // columns per panel: one AVX register
// How far ahead of the loads the prefetch reads, in bytes: about 4 KiB was the fastest of 0.5 to
// 4 KiB on [8, 768] x [768, 3072] and [8, 3072] x [3072, 768], weights from memory.
constexpr size_t PREFETCH = 4096;

// MR rows of x against one panel: MR accumulators, one weight load per k used for every row.
// cols: how many of the panel's 8 columns are real (the last panel may have fewer).
template <int MR>
__attribute__((target("avx2,fma"))) void panelRows(const float* x, size_t K, const float* p, const float* bias, float* out,
                                                   size_t ldo, size_t cols) {
  __m256 acc[MR];
  __m256 b = _mm256_setzero_ps();
  if (bias != nullptr) {
    alignas(32) float tmp[NR] = {0};
    std::memcpy(tmp, bias, cols * sizeof(float));
    b = _mm256_load_ps(tmp);
  }
  for (int r = 0; r < MR; r++) acc[r] = b;
  size_t k = 0;
  for (; k + 2 <= K; k += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(p + k * NR) + PREFETCH, _MM_HINT_T0);
    const __m256 w0 = _mm256_load_ps(p + k * NR);
    const __m256 w1 = _mm256_load_ps(p + k * NR + NR);
    for (int r = 0; r < MR; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + r * K + k), w0, acc[r]);
    for (int r = 0; r < MR; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + r * K + k + 1), w1, acc[r]);
  }
  for (; k < K; k++) {
    const __m256 w0 = _mm256_load_ps(p + k * NR);
    for (int r = 0; r < MR; r++) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(x + r * K + k), w0, acc[r]);
  }
  if (cols == NR) {
    for (int r = 0; r < MR; r++) _mm256_storeu_ps(out + r * ldo, acc[r]);
    return;
  }
  alignas(32) float tmp[NR];
  for (int r = 0; r < MR; r++) {
    _mm256_store_ps(tmp, acc[r]);
    std::memcpy(out + r * ldo, tmp, cols * sizeof(float));
  }
}

}  // namespace

bool supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

size_t packedFloats(size_t K, size_t N) { return K * ((N + NR - 1) / NR) * NR; }

void pack(const float* W, size_t K, size_t N, bool transposed, float* out) {
  const size_t panelsN = (N + NR - 1) / NR;
  for (size_t j = 0; j < panelsN; j++) {
    float* p = out + j * K * NR;
    for (size_t k = 0; k < K; k++)
      for (size_t c = 0; c < NR; c++) {
        const size_t n = j * NR + c;
        p[k * NR + c] = n < N ? (transposed ? W[n * K + k] : W[k * N + n]) : 0.f;
      }
  }
}

void run(const float* x, size_t M, size_t K, size_t N, const float* packed, const float* bias, float* out, int threads) {
  const long panelsN = static_cast<long>((N + NR - 1) / NR);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (long j = 0; j < panelsN; j++) {
    const float* p = packed + j * K * NR;
    const size_t col = j * NR;
    const size_t cols = N - col < NR ? N - col : NR;
    const float* b = bias != nullptr ? bias + col : nullptr;
    size_t m = 0;
    for (; m + 8 <= M; m += 8) panelRows<8>(x + m * K, K, p, b, out + m * N + col, N, cols);
    for (; m + 4 <= M; m += 4) panelRows<4>(x + m * K, K, p, b, out + m * N + col, N, cols);
    for (; m + 2 <= M; m += 2) panelRows<2>(x + m * K, K, p, b, out + m * N + col, N, cols);
    for (; m < M; m++) panelRows<1>(x + m * K, K, p, b, out + m * N + col, N, cols);
  }
}

#else  // the kernels are AVX2: elsewhere they are not offered (supported() is false)

bool supported() { return false; }
size_t packedFloats(size_t, size_t) { return 0; }
void pack(const float*, size_t, size_t, bool, float*) {}
void run(const float*, size_t, size_t, size_t, const float*, const float*, float*, int) {}

#endif

}  // namespace panels
