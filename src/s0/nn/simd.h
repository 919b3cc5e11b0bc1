#pragma once
// Private to src/s0/nn (not a public API): what the hand-written CPU kernels share.
//   - storage types: raw element type in memory, math type, conversions and rounding;
//   - exp over arrays (AVX-512 or libm) and the run-time choice between an AVX-512 and a
//     portable build of a kernel body;
//   - sums and maxima in 16 fixed lanes (results independent of where a row sits);
//   - dtype dispatch, row blocking, strided [B, L, H, d] head views;
//   - CPU feature probes and oneDNN's sgemm found at run time.
// The kernels make one pass over memory where plain ATen would take several; their
// hand-written backwards give input gradients only (S0 training needs gradients with
// respect to activations and initial states only: weights are frozen). Storage dtypes bf16,
// f32 and f64 (f64 for the finite-difference tests); the math runs in f32 (f64 for f64) and
// rounds to the storage dtype where the Hugging Face reference rounds. AVX-512 code paths
// are chosen at run time; the portable paths compute the same formulas.
// Include it from kernel .cpp files only: it silences GCC 12's false positives on the
// AVX-512 intrinsic headers for the rest of the including file.
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "s0/util/torch.h"

// GCC 12's AVX-512 intrinsic headers use deliberately undefined vectors and trip these
// (known false positives, e.g. _mm512_reduce_add_ps inlined into a blocked kernel).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"  // __m512 values passed between AVX-512 functions only
#include <immintrin.h>

#define S0_INLINE inline __attribute__((always_inline))
#define S0_INLINE_LAMBDA __attribute__((always_inline))

namespace s0::nn::simd {

// ---- CPU features (probed once) ------------------------------------------------------------

inline bool cpu_avx512f() {
  static const bool v = __builtin_cpu_supports("avx512f");
  return v;
}
inline bool cpu_avx512dq() {
  static const bool v = __builtin_cpu_supports("avx512dq");
  return v;
}
inline bool cpu_avx512bw() {
  static const bool v = __builtin_cpu_supports("avx512bw");
  return v;
}
inline bool cpu_avx512bf16() {
  static const bool v = __builtin_cpu_supports("avx512bf16");
  return v;
}

// What the elementwise kernels' AVX-512 builds (run_avx512 below) need.
inline bool has_avx512() { return cpu_avx512f() && cpu_avx512dq() && cpu_avx512bw(); }

// ---- 16 x 16 transpose (AVX-512) ---------------------------------------------------------

// r[i] = row i of a 16 x 16 matrix of 32-bit values; afterwards r[j] = its column j.
// Pairs of rows interleaved, then 4 x 4 blocks inside each 128-bit lane, then the lanes.
__attribute__((target("avx512f"))) inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // u[4 i + c], lane l: column 4 l + c of rows 4 i .. 4 i + 3.
  for (int c = 0; c < 4; ++c) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88), v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88),
                 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
    r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
    r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
  }
}

// ---- oneDNN's sgemm (row-major, sgemm argument order), found in the process at run time --

using SgemmFn = int (*)(char, char, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                        int64_t, float, float*, int64_t);

// dnnl_sgemm when libtorch brought oneDNN into the process, else null.
inline SgemmFn dnnl_sgemm() {
  static const SgemmFn f = [] {
    void* p = dlsym(RTLD_DEFAULT, "dnnl_sgemm");
    if (!p)
      if (void* h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_NOLOAD)) p = dlsym(h, "dnnl_sgemm");
    return reinterpret_cast<SgemmFn>(p);
  }();
  return f;
}

// ---- storage types: raw element type in memory, math type, conversions ------------------

S0_INLINE float bf16_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

S0_INLINE uint16_t f32_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? ((u >> 16) | 0x40u) : r);
}

template <class T>
struct St;
template <>
struct St<at::BFloat16> {
  using Raw = uint16_t;
  using A = float;
  static S0_INLINE float load(uint16_t v) { return bf16_to_f32(v); }
  static S0_INLINE uint16_t store(float v) { return f32_to_bf16(v); }
  static S0_INLINE float round(float v) { return bf16_to_f32(f32_to_bf16(v)); }
};
template <>
struct St<float> {
  using Raw = float;
  using A = float;
  static S0_INLINE float load(float v) { return v; }
  static S0_INLINE float store(float v) { return v; }
  static S0_INLINE float round(float v) { return v; }
};
template <>
struct St<double> {
  using Raw = double;
  using A = double;
  static S0_INLINE double load(double v) { return v; }
  static S0_INLINE double store(double v) { return v; }
  static S0_INLINE double round(double v) { return v; }
};

template <class T>
typename St<T>::Raw* raw(const Tensor& t) {
  return reinterpret_cast<typename St<T>::Raw*>(t.data_ptr<T>());
}

// The math dtype of a storage dtype: f64 stays f64 (tests), everything else is f32.
inline at::ScalarType acc_type(const Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// ---- exp over arrays: AVX-512 (range reduction to [-ln2/2, ln2/2], degree-6 Taylor
// polynomial, 2^n by scalef; ~1 ulp) or libm -------------------------------------------

__attribute__((target("avx512f,avx512dq"))) inline __m512 exp16(__m512 v) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), ln2_hi = _mm512_set1_ps(0.693359375f),
               ln2_lo = _mm512_set1_ps(-2.12194440e-4f), one = _mm512_set1_ps(1.f);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512 x = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-104.f)), _mm512_set1_ps(89.f));
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, ln2_hi, x);
  r = _mm512_fnmadd_ps(k, ln2_lo, r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.f / 720), r, _mm512_set1_ps(1.f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, one);
  p = _mm512_fmadd_ps(p, r, one);
  return _mm512_mask_mov_ps(_mm512_scalef_ps(p, k), nan, v);  // NaN in, NaN out
}

__attribute__((target("avx512f,avx512dq"))) inline void exp_avx512(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

inline void exp_libm(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}
inline void exp_libm(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}
struct ExpVec {
  void operator()(const float* x, float* y, int64_t n) const { exp_avx512(x, y, n); }
};
struct ExpLibm {
  template <class A>
  void operator()(const A* x, A* y, int64_t n) const { exp_libm(x, y, n); }
};

// Runs body(ExpVec) in an AVX-512 compiled function when the CPU has it and the math is
// f32, else body(ExpLibm). The bodies are always_inline templates, so the plain loops in
// them are vectorised for the instruction set of the function they are inlined into.
template <class F>
__attribute__((target("avx512f,avx512dq,avx512bw"))) void run_avx512(const F& body) {
  body(ExpVec{});
}
template <class F>
void run_portable(const F& body) {
  body(ExpLibm{});
}
template <class T, class F>
void dispatch(const F& body) {
  if constexpr (std::is_same_v<typename St<T>::A, float>) {
    if (has_avx512()) return run_avx512(body);
  }
  run_portable(body);
}

template <class F>
void dispatch_dtype(at::ScalarType t, const char* what, const F& f) {
  switch (t) {
    case at::kBFloat16: return f(at::BFloat16{});
    case at::kFloat: return f(float{});
    case at::kDouble: return f(double{});
    default: TORCH_CHECK(false, what, ": dtype must be bf16, f32 or f64");
  }
}

// Rows [r0, r1) in blocks of at most this many elements (keeps the scratch in L1/L2).
constexpr int64_t kBlock = 2048;

inline int64_t row_grain(int64_t C) { return std::max<int64_t>(1, kBlock / std::max<int64_t>(C, 1)); }

// sum_i f(i) over [0, n) in 16 fixed lanes (lane i % 16, lanes added in order at the end):
// the compiler vectorises it without reassociating anything (a plain `s += f(i)` loop
// stays scalar), and the result depends only on n and the values, never on where the row
// sits in memory (batched decode relies on that).
template <class A, class F>
S0_INLINE A lane_sum(int64_t n, F f) {
  A acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += f(i + j);
  for (int j = 0; i + j < n; ++j) acc[j] += f(i + j);
  A s = 0;
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

template <class A, class F>
S0_INLINE A lane_max(int64_t n, F f) {
  A acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = -std::numeric_limits<A>::infinity();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) {
      const A v = f(i + j);
      acc[j] = v > acc[j] ? v : acc[j];
    }
  for (int j = 0; i + j < n; ++j) acc[j] = std::max(acc[j], f(i + j));
  A m = acc[0];
  for (int j = 1; j < 16; ++j) m = std::max(m, acc[j]);
  return m;
}

// Strided [B, L, H, d] view with a contiguous last dim (a head-split slice of a projection).
struct View4 {
  int64_t B, L, H, d, sb, sl, sh;
  explicit View4(const Tensor& t)
      : B(t.size(0)), L(t.size(1)), H(t.size(2)), d(t.size(3)), sb(t.stride(0)), sl(t.stride(1)), sh(t.stride(2)) {
    TORCH_CHECK(t.stride(3) == 1, "fused norm: the last dim must be contiguous");
  }
  int64_t at(int64_t b, int64_t l, int64_t h) const { return b * sb + l * sl + h * sh; }
};

}  // namespace s0::nn::simd
