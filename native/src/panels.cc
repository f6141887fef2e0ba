#include "panels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstring>
#include <vector>

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

// 6 rows against two adjacent panels (16 columns): 12 accumulators, two weight loads and six
// broadcasts per k. xp holds the 6 rows packed as [K][6], so one k's broadcasts share a cache line.
// Compute, not memory, limits a matmul of 12 rows or more; this was 1.2x to 1.3x the 8-row kernel there.
__attribute__((target("avx2,fma"))) void sixRows(const float* xp, size_t K, const float* p0, const float* p1, const float* bias,
                                                 float* out, size_t ldo) {
  // named accumulators, not an array: GCC keeps an array of them on the stack here
  const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + NR) : _mm256_setzero_ps();
  __m256 a00 = b0, a10 = b0, a20 = b0, a30 = b0, a40 = b0, a50 = b0;
  __m256 a01 = b1, a11 = b1, a21 = b1, a31 = b1, a41 = b1, a51 = b1;
  for (size_t k = 0; k < K; k++) {
    _mm_prefetch(reinterpret_cast<const char*>(p0 + k * NR) + PREFETCH, _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(p1 + k * NR) + PREFETCH, _MM_HINT_T0);
    const __m256 w0 = _mm256_load_ps(p0 + k * NR);
    const __m256 w1 = _mm256_load_ps(p1 + k * NR);
    const float* x = xp + k * 6;
    __m256 v = _mm256_broadcast_ss(x);
    a00 = _mm256_fmadd_ps(v, w0, a00), a01 = _mm256_fmadd_ps(v, w1, a01);
    v = _mm256_broadcast_ss(x + 1);
    a10 = _mm256_fmadd_ps(v, w0, a10), a11 = _mm256_fmadd_ps(v, w1, a11);
    v = _mm256_broadcast_ss(x + 2);
    a20 = _mm256_fmadd_ps(v, w0, a20), a21 = _mm256_fmadd_ps(v, w1, a21);
    v = _mm256_broadcast_ss(x + 3);
    a30 = _mm256_fmadd_ps(v, w0, a30), a31 = _mm256_fmadd_ps(v, w1, a31);
    v = _mm256_broadcast_ss(x + 4);
    a40 = _mm256_fmadd_ps(v, w0, a40), a41 = _mm256_fmadd_ps(v, w1, a41);
    v = _mm256_broadcast_ss(x + 5);
    a50 = _mm256_fmadd_ps(v, w0, a50), a51 = _mm256_fmadd_ps(v, w1, a51);
  }
  const __m256 acc[6][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}, {a40, a41}, {a50, a51}};
  for (int r = 0; r < 6; r++) {
    _mm256_storeu_ps(out + r * ldo, acc[r][0]);
    _mm256_storeu_ps(out + r * ldo + NR, acc[r][1]);
  }
}

// Rows [m, M) of x against one panel, 8, 4, 2 and 1 at a time; out points at the panel's column.
void rows(const float* x, size_t m, size_t M, size_t K, const float* p, const float* b, float* out, size_t N, size_t cols) {
  for (; m + 8 <= M; m += 8) panelRows<8>(x + m * K, K, p, b, out + m * N, N, cols);
  for (; m + 4 <= M; m += 4) panelRows<4>(x + m * K, K, p, b, out + m * N, N, cols);
  for (; m + 2 <= M; m += 2) panelRows<2>(x + m * K, K, p, b, out + m * N, N, cols);
  for (; m < M; m++) panelRows<1>(x + m * K, K, p, b, out + m * N, N, cols);
}

// Rows [0, 6·blocks) of x packed per block of 6 as [K][6].
void packRows(const float* x, size_t K, size_t blocks, float* xp) {
  for (size_t b = 0; b < blocks; b++)
    for (size_t k = 0; k < K; k++)
      for (size_t r = 0; r < 6; r++) xp[(b * K + k) * 6 + r] = x[(b * 6 + r) * K + k];
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
  const size_t panelsN = (N + NR - 1) / NR;
  // From 12 rows, blocks of 6 rows run two full panels at a time (sixRows); what is left (the last
  // rows, an odd or partial last panel) runs panelRows.
  const size_t blocks = M >= 12 ? M / 6 : 0;
  const size_t pairs = blocks > 0 ? (N / NR) / 2 : 0;
  static thread_local std::vector<float> xp;
  if (blocks > 0) {
    xp.resize(blocks * 6 * K);
    packRows(x, K, blocks, xp.data());
  }
  const float* xpd = xp.data();
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (long j = 0; j < static_cast<long>(panelsN); j++) {
    const float* p = packed + j * K * NR;
    const size_t col = j * NR;
    const size_t cols = N - col < NR ? N - col : NR;
    const float* b = bias != nullptr ? bias + col : nullptr;
    if (static_cast<size_t>(j) < 2 * pairs) {
      if (j % 2 == 1) continue;  // done with its pair
      for (size_t blk = 0; blk < blocks; blk++) sixRows(xpd + blk * 6 * K, K, p, p + K * NR, b, out + blk * 6 * N + col, N);
      rows(x, blocks * 6, M, K, p, b, out + col, N, NR);
      rows(x, blocks * 6, M, K, p + K * NR, b ? b + NR : nullptr, out + col + NR, N, NR);
      continue;
    }
    rows(x, 0, M, K, p, b, out + col, N, cols);
  }
}

#else  // the kernels are AVX2: elsewhere they are not offered (supported() is false)

bool supported() { return false; }
size_t packedFloats(size_t, size_t) { return 0; }
void pack(const float*, size_t, size_t, bool, float*) {}
void run(const float*, size_t, size_t, size_t, const float*, const float*, float*, int) {}

#endif

}  // namespace panels
