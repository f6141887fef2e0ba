// N-API addon: oneDNN matmul primitives that read and write tfjs-wasm tensors in place. Every
// tensor is an offset into the one WebAssembly.Memory buffer, which the caller passes on each call
// (the memory may grow and replace its buffer between calls). Primitives and packed weights are
// created once and referred to by index; the JavaScript side decides when (warm-up) and counts any
// creation after warm-up as a retrace.
//
// Packing: oneDNN 2.x on AVX2 runs f32 matmul through its jit sgemm, which takes plain layouts
// only, and which layout of the weights is faster ([K, N] or [N, K]) depends on the shape (for few
// rows, the transposed one often is, by 2x). So a weight's packed form is its transposed copy,
// outside the wasm heap, and the JavaScript side picks per weight and row count by timing both.
// For few rows there is a third layout, 8-column panels run by this addon's own kernel (panels.h).
#include <node_api.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "attention.h"
#include "panels.h"
#include "rowops.h"

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

dnnl::engine& cpu() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& queue() {
  static dnnl::stream s(cpu());
  return s;
}

struct Matmul {
  dnnl::matmul prim;
  memory src, wei, bias, dst;  // user memories; data handles are set on each call
  memory::desc plainWei;       // the weights as tfjs stores them (the source of a packed copy)
  bool hasBias = false;
  bool packed = false;  // the weights are a packed copy (the other layout), not the tensor itself
};

std::vector<std::unique_ptr<Matmul>> matmuls;
// A packed copy of a weight: a oneDNN memory (the other layout) or 8-column panels.
struct Pack {
  std::unique_ptr<memory> mem;
  float* panels = nullptr;
  size_t K = 0, N = 0;
  ~Pack() { std::free(panels); }
};
std::vector<std::unique_ptr<Pack>> packs;  // null once freed
int kernelThreads = 1;

#define CHECK(call)                                                        \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      napi_throw_error(env, nullptr, "batchgen native: N-API call failed"); \
      return nullptr;                                                      \
    }                                                                      \
  } while (0)

std::vector<napi_value> args(napi_env env, napi_callback_info info, size_t n) {
  std::vector<napi_value> v(n);
  size_t got = n;
  napi_get_cb_info(env, info, &got, v.data(), nullptr, nullptr);
  return v;
}

double num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

char* heap(napi_env env, napi_value v) {
  void* data = nullptr;
  size_t len = 0;
  if (napi_get_arraybuffer_info(env, v, &data, &len) != napi_ok) return nullptr;
  return static_cast<char*>(data);
}

napi_value make(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

napi_value fail(napi_env env, const std::string& what) {
  napi_throw_error(env, nullptr, ("batchgen native: " + what).c_str());
  return nullptr;
}

// create(batchA, batchB, M, K, N, transA, transB, hasBias, act, alpha, packed)
//   -> [id, implementation]; packed: the weights are a copy in the other layout (see pack).
// act: the fused activation as an eltwise post-op: 0 none, 1 relu, 2 relu6, 3 sigmoid, 4 elu,
// 5 leaky relu (alpha); tfjs's names for them, in tfjs's meaning.
napi_value create(napi_env env, napi_callback_info info) {
  auto a = args(env, info, 11);
  const memory::dim bA = num(env, a[0]), bB = num(env, a[1]), M = num(env, a[2]), K = num(env, a[3]),
                    N = num(env, a[4]);
  const bool tA = num(env, a[5]) != 0, tB = num(env, a[6]) != 0, hasBias = num(env, a[7]) != 0;
  const int act = static_cast<int>(num(env, a[8]));
  const float alpha = num(env, a[9]);
  const bool pack = num(env, a[10]) != 0;
  try {
    auto m = std::make_unique<Matmul>();
    memory::desc src({bA, M, K}, dt::f32, tA ? memory::dims{M * K, 1, M} : memory::dims{M * K, K, 1});
    const memory::dims kn{K * N, N, 1}, nk{K * N, 1, K};  // strides of [K, N] and of [N, K] storage
    m->plainWei = memory::desc({bB, K, N}, dt::f32, tB ? nk : kn);
    memory::desc wei = pack ? memory::desc({bB, K, N}, dt::f32, tB ? kn : nk) : m->plainWei;
    memory::desc bias({1, 1, N}, dt::f32, tag::abc);
    memory::desc dst({bA > bB ? bA : bB, M, N}, dt::f32, tag::abc);
    dnnl::primitive_attr attr;
    if (act != 0) {
      dnnl::post_ops po;
      using alg = dnnl::algorithm;
      if (act == 1) po.append_eltwise(1.f, alg::eltwise_relu, 0.f, 0.f);
      else if (act == 2) po.append_eltwise(1.f, alg::eltwise_clip, 0.f, 6.f);
      else if (act == 3) po.append_eltwise(1.f, alg::eltwise_logistic, 0.f, 0.f);
      else if (act == 4) po.append_eltwise(1.f, alg::eltwise_elu, 1.f, 0.f);
      else if (act == 5) po.append_eltwise(1.f, alg::eltwise_relu, alpha, 0.f);
      else return fail(env, "unknown activation");
      attr.set_post_ops(po);
    }
    auto d = hasBias ? dnnl::matmul::desc(src, wei, bias, dst) : dnnl::matmul::desc(src, wei, dst);
    dnnl::matmul::primitive_desc pd(d, attr, cpu());
    m->prim = dnnl::matmul(pd);
    m->src = memory(pd.src_desc(), cpu(), nullptr);
    m->dst = memory(pd.dst_desc(), cpu(), nullptr);
    m->hasBias = hasBias;
    if (hasBias) m->bias = memory(pd.bias_desc(), cpu(), nullptr);
    m->packed = pack;
    m->wei = memory(pd.weights_desc(), cpu(), nullptr);
    const std::string impl = pd.impl_info_str();
    matmuls.push_back(std::move(m));
    napi_value out, s;
    CHECK(napi_create_array_with_length(env, 2, &out));
    CHECK(napi_set_element(env, out, 0, make(env, matmuls.size() - 1)));
    CHECK(napi_create_string_utf8(env, impl.c_str(), impl.size(), &s));
    CHECK(napi_set_element(env, out, 1, s));
    return out;
  } catch (const dnnl::error& e) {
    return fail(env, std::string("matmul primitive: ") + e.what());
  }
}

// pack(heap, bOffset, matmulId) -> packId: the weights at bOffset copied into the layout of a
// packed matmul. Done once per weight; the copy lives outside the wasm heap.
napi_value pack(napi_env env, napi_callback_info info) {
  auto a = args(env, info, 3);
  char* base = heap(env, a[0]);
  const size_t off = num(env, a[1]);
  const size_t id = num(env, a[2]);
  if (base == nullptr || id >= matmuls.size() || !matmuls[id]->packed) return fail(env, "pack: bad arguments");
  try {
    Matmul& m = *matmuls[id];
    memory user(m.plainWei, cpu(), base + off);
    auto packed = std::make_unique<Pack>();
    packed->mem = std::make_unique<memory>(m.wei.get_desc(), cpu());
    dnnl::reorder(user, *packed->mem).execute(queue(), user, *packed->mem);
    queue().wait();
    packs.push_back(std::move(packed));
    return make(env, packs.size() - 1);
  } catch (const dnnl::error& e) {
    return fail(env, std::string("pack: ") + e.what());
  }
}

napi_value unpack(napi_env env, napi_callback_info info) {
  auto a = args(env, info, 1);
  const size_t id = num(env, a[0]);
  if (id < packs.size()) packs[id].reset();
  return nullptr;
}

// run(heap, matmulId, aOffset, bOffset, biasOffset, outOffset, packId): packId >= 0 takes the
// packed weights instead of bOffset.
napi_value run(napi_env env, napi_callback_info info) {
  auto a = args(env, info, 7);
  char* base = heap(env, a[0]);
  const size_t id = num(env, a[1]);
  const double packId = num(env, a[6]);
  if (base == nullptr || id >= matmuls.size()) return fail(env, "run: bad arguments");
  Matmul& m = *matmuls[id];
  try {
    m.src.set_data_handle(base + static_cast<size_t>(num(env, a[2])));
    m.dst.set_data_handle(base + static_cast<size_t>(num(env, a[5])));
    std::unordered_map<int, memory> io{{DNNL_ARG_SRC, m.src}, {DNNL_ARG_DST, m.dst}};
    if (m.packed) {
      const size_t p = packId;
      if (packId < 0 || p >= packs.size() || !packs[p] || !packs[p]->mem) return fail(env, "run: packed weights missing");
      io[DNNL_ARG_WEIGHTS] = *packs[p]->mem;
    } else {
      m.wei.set_data_handle(base + static_cast<size_t>(num(env, a[3])));
      io[DNNL_ARG_WEIGHTS] = m.wei;
    }
    if (m.hasBias) {
      m.bias.set_data_handle(base + static_cast<size_t>(num(env, a[4])));
      io[DNNL_ARG_BIAS] = m.bias;
    }
    m.prim.execute(queue(), io);
    queue().wait();
  } catch (const dnnl::error& e) {
    return fail(env, std::string("run: ") + e.what());
  }
  return nullptr;
}

// The arguments of a call on tensors in the wasm heap: argument 0 is the heap's ArrayBuffer, the
// others byte offsets into it (ptr) or plain numbers (num).
struct HeapArgs {
  napi_env env;
  std::vector<napi_value> a;
  char* base;
  HeapArgs(napi_env e, napi_callback_info info, size_t n) : env(e), a(args(e, info, n)), base(heap(e, a[0])) {}
  float* ptr(size_t i) const { return reinterpret_cast<float*>(base + static_cast<size_t>(num(env, a[i]))); }
  double n(size_t i) const { return num(env, a[i]); }
};

// packPanels(heap, bOffset, K, N, transposed) -> packId: the [K, N] weights (stored [N, K] when
// transposed) at bOffset copied into 8-column panels outside the wasm heap.
napi_value packPanels(napi_env env, napi_callback_info info) {
  auto a = args(env, info, 5);
  char* base = heap(env, a[0]);
  const size_t off = num(env, a[1]), K = num(env, a[2]), N = num(env, a[3]);
  const bool transposed = num(env, a[4]) != 0;
  if (base == nullptr || !panels::supported() || K == 0 || N == 0) return fail(env, "packPanels: bad arguments");
  auto packed = std::make_unique<Pack>();
  const size_t bytes = (panels::packedFloats(K, N) * sizeof(float) + 31) / 32 * 32;
  packed->panels = static_cast<float*>(std::aligned_alloc(32, bytes));
  if (packed->panels == nullptr) return fail(env, "packPanels: out of memory");
  packed->K = K;
  packed->N = N;
  panels::pack(reinterpret_cast<const float*>(base + off), K, N, transposed, packed->panels);
  packs.push_back(std::move(packed));
  return make(env, packs.size() - 1);
}

// runPanels(heap, aOffset, M, packId, biasOffset, outOffset): out[M, N] = a[M, K] @ panels (+ bias
// when biasOffset >= 0), K and N those of the pack.
napi_value runPanels(napi_env env, napi_callback_info info) {
  const HeapArgs h(env, info, 6);
  const size_t p = h.n(3);
  if (h.base == nullptr || p >= packs.size() || !packs[p] || packs[p]->panels == nullptr) return fail(env, "runPanels: bad arguments");
  const Pack& pk = *packs[p];
  const float* bias = h.n(4) >= 0 ? h.ptr(4) : nullptr;
  panels::run(h.ptr(1), h.n(2), pk.K, pk.N, pk.panels, bias, h.ptr(5), kernelThreads);
  return nullptr;
}

// attention(heap, qOffset, kOffset, vtOffset, biasOffset, outOffset, R, H, KV, T, D, scale, masked):
// one decode step's attention over the cache (attention.h).
napi_value decodeAttention(napi_env env, napi_callback_info info) {
  const HeapArgs h(env, info, 13);
  if (h.base == nullptr || !attention::supported()) return fail(env, "attention: bad arguments");
  const size_t H = h.n(7), KV = h.n(8);
  if (KV == 0 || H % KV != 0) return fail(env, "attention: heads must be a multiple of key/value heads");
  attention::decode(h.ptr(1), h.ptr(2), h.ptr(3), h.ptr(4), h.ptr(5), h.n(6), H, KV, h.n(9), h.n(10), h.n(11), h.n(12), kernelThreads);
  return nullptr;
}

// The row ops (rowops.h); offsets into heap. layerNorm(heap, x, g, b, out, rows, n, eps),
// rmsNorm(heap, x, w, out, rows, n, eps), gelu(heap, x, out, n), siluMul(heap, g, u, out, n),
// rotary(heap, x, cos, sin, out, positions, heads, D).
napi_value layerNorm(napi_env env, napi_callback_info info) {
  const HeapArgs h(env, info, 8);
  if (h.base == nullptr) return fail(env, "layerNorm: bad arguments");
  rowops::layerNorm(h.ptr(1), h.ptr(2), h.ptr(3), h.ptr(4), h.n(5), h.n(6), h.n(7));
  return nullptr;
}

napi_value rmsNorm(napi_env env, napi_callback_info info) {
  const HeapArgs h(env, info, 7);
  if (h.base == nullptr) return fail(env, "rmsNorm: bad arguments");
  rowops::rmsNorm(h.ptr(1), h.ptr(2), h.ptr(3), h.n(4), h.n(5), h.n(6));
  return nullptr;
}

napi_value gelu(napi_env env, napi_callback_info info) {
  const HeapArgs h(env, info, 4);
  if (h.base == nullptr) return fail(env, "gelu: bad arguments");
  rowops::gelu(h.ptr(1), h.ptr(2), h.n(3));
  return nullptr;
}

napi_value siluMul(napi_env env, napi_callback_info info) {
  const HeapArgs h(env, info, 5);
  if (h.base == nullptr) return fail(env, "siluMul: bad arguments");
  rowops::siluMul(h.ptr(1), h.ptr(2), h.ptr(3), h.n(4));
  return nullptr;
}

napi_value rotary(napi_env env, napi_callback_info info) {
  const HeapArgs h(env, info, 8);
  if (h.base == nullptr) return fail(env, "rotary: bad arguments");
  rowops::rotary(h.ptr(1), h.ptr(2), h.ptr(3), h.ptr(4), h.n(5), h.n(6), h.n(7));
  return nullptr;
}

napi_value ownKernels(napi_env env, napi_callback_info) {
  napi_value out;
  napi_get_boolean(env, panels::supported() && attention::supported(), &out);
  return out;
}

// flush(): writes a buffer larger than the caches, so that the next matmul reads its weights from
// memory, as a decode step does (each layer's weights once per step). Layout timing uses it.
napi_value flush(napi_env env, napi_callback_info) {
  static std::vector<char> buffer(64 << 20);
  static char round = 0;
  round++;
  for (size_t i = 0; i < buffer.size(); i += 64) buffer[i] = round;
  return nullptr;
}

// Sums n floats with independent accumulators (so the loads, not the adds, are the limit).
#if defined(__x86_64__)
__attribute__((target("avx2"))) float sumFloats(const float* p, size_t n) {
  __m256 s[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (size_t i = 0; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; j++) s[j] = _mm256_add_ps(s[j], _mm256_loadu_ps(p + i + 8 * j));
  float out[8];
  _mm256_storeu_ps(out, _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3])));
  return out[0] + out[7];
}
#else
float sumFloats(const float* p, size_t n) {
  float s[8] = {0};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += p[i + j];
  return s[0] + s[7];
}
#endif

// readBandwidth() -> GB/s: one thread reading a 512 MiB buffer (larger than the caches), the
// median of 5 reads; the benchmark's memory roofline (a decode step reads every weight once).
napi_value readBandwidth(napi_env env, napi_callback_info) {
  static std::vector<float> buffer((512u << 20) / sizeof(float), 1.f);
  std::vector<double> gbs;
  volatile float sink = 0;
  for (int run = 0; run < 5; run++) {
    const auto t0 = std::chrono::steady_clock::now();
    sink = sink + sumFloats(buffer.data(), buffer.size());
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    gbs.push_back(buffer.size() * sizeof(float) / sec / 1e9);
  }
  std::sort(gbs.begin(), gbs.end());
  return make(env, gbs[2]);
}

napi_value setThreads(napi_env env, napi_callback_info info) {
  auto a = args(env, info, 1);
  const int n = static_cast<int>(num(env, a[0]));
  if (n >= 1) {
    omp_set_num_threads(n);
    kernelThreads = n;
  }
  return make(env, omp_get_max_threads());
}

napi_value threads(napi_env env, napi_callback_info) { return make(env, omp_get_max_threads()); }

napi_value version(napi_env env, napi_callback_info) {
  const dnnl_version_t* v = dnnl_version();
  const std::string s = "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                        std::to_string(v->patch);
  napi_value out;
  napi_create_string_utf8(env, s.c_str(), s.size(), &out);
  return out;
}

napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"create", nullptr, create, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"pack", nullptr, pack, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"unpack", nullptr, unpack, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"run", nullptr, run, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"packPanels", nullptr, packPanels, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"runPanels", nullptr, runPanels, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"attention", nullptr, decodeAttention, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"layerNorm", nullptr, layerNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rmsNorm", nullptr, rmsNorm, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"gelu", nullptr, gelu, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"siluMul", nullptr, siluMul, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"rotary", nullptr, rotary, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"ownKernels", nullptr, ownKernels, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"flush", nullptr, flush, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"readBandwidth", nullptr, readBandwidth, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"setThreads", nullptr, setThreads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"threads", nullptr, threads, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"version", nullptr, version, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
