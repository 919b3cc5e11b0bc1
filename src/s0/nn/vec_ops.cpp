#include "s0/nn/vec_ops.h"

#include "s0/nn/simd.h"

namespace s0::nn {

using namespace simd;

namespace {

__attribute__((target("avx512f"))) float max_avx512(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  // MAXPS returns its second operand when either is NaN: the running max survives a NaN.
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, k, _mm512_maskz_loadu_ps(k, x + i), m);
  }
  return _mm512_reduce_max_ps(m);
}

__attribute__((target("avx512f"))) int64_t find_avx512(const float* x, int64_t n, float v) {
  const __m512 vv = _mm512_set1_ps(v);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    if (__mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), vv, _CMP_EQ_OQ)) return i + __builtin_ctz(k);
  for (; i < n; ++i)
    if (x[i] == v) return i;
  return n;
}

// exp((v - s) * c) of the lanes in k (0 elsewhere), added to the f64 lane sums lo (0-7) and hi (8-15).
__attribute__((target("avx512f,avx512dq"))) inline __m512 exp_lanes(__m512 v, __mmask16 k, __m512 s, __m512 c,
                                                                     __m512d& lo, __m512d& hi) {
  const __m512 e = _mm512_maskz_mov_ps(k, exp16(_mm512_mul_ps(_mm512_sub_ps(v, s), c)));
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
  hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  return e;
}

__attribute__((target("avx512f,avx512dq"))) double exp_avx512_sum(const float* x, float shift, float scale, float* y,
                                                                   int64_t n) {
  const __m512 s = _mm512_set1_ps(shift), c = _mm512_set1_ps(scale);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp_lanes(_mm512_loadu_ps(x + i), 0xffff, s, c, lo, hi));
  if (i < n) {
    const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, k, exp_lanes(_mm512_maskz_loadu_ps(k, x + i), k, s, c, lo, hi));
  }
  double l[8], h[8], t = 0;
  _mm512_storeu_pd(l, lo);
  _mm512_storeu_pd(h, hi);
  for (int j = 0; j < 8; ++j) t += l[j];
  for (int j = 0; j < 8; ++j) t += h[j];
  return t;
}

__attribute__((target("avx512f"))) int64_t indices_avx512(const float* y, int64_t n, float thr, int32_t* idx) {
  const __m512 t = _mm512_set1_ps(thr);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t c = 0, i = 0;
  for (; i + 16 <= n; i += 16, iv = _mm512_add_epi32(iv, step)) {
    const __mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(y + i), t, _CMP_GE_OQ);
    _mm512_mask_compressstoreu_epi32(idx + c, k, iv);
    c += __builtin_popcount(k);
  }
  for (; i < n; ++i)
    if (y[i] >= thr) idx[c++] = static_cast<int32_t>(i);
  return c;
}

__attribute__((target("avx512f"))) void widen_avx512(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)));
    _mm512_storeu_si512(y + i, _mm512_slli_epi32(v, 16));
  }
  for (; i < n; ++i) y[i] = bf16_to_f32(x[i]);
}

}  // namespace

void widen_bf16(const uint16_t* x, float* y, int64_t n) {
  if (cpu_avx512f()) return widen_avx512(x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(x[i]);
}

float max_ignoring_nan(const float* x, int64_t n) {
  if (cpu_avx512f()) return max_avx512(x, n);
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

int64_t find_first(const float* x, int64_t n, float v) {
  if (cpu_avx512f()) return find_avx512(x, n, v);
  for (int64_t i = 0; i < n; ++i)
    if (x[i] == v) return i;
  return n;
}

double exp_shifted(const float* x, float shift, float scale, float* y, int64_t n) {
  if (has_avx512()) return exp_avx512_sum(x, shift, scale, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp((x[i] - shift) * scale);
  return lane_sum<double>(n, [&](int64_t i) { return static_cast<double>(y[i]); });
}

int64_t indices_at_least(const float* y, int64_t n, float thr, int32_t* idx) {
  if (cpu_avx512f()) return indices_avx512(y, n, thr, idx);
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i)
    if (y[i] >= thr) idx[c++] = static_cast<int32_t>(i);
  return c;
}

}  // namespace s0::nn
