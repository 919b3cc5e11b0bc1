#pragma once
// The causal conv + SiLU of a fused decode step (gdn_step.cpp, ssd_step.cpp) for one row:
// channels [c0, c0 + n) from their history [C, Kc-1] (model dtype, updated in place) and the
// current inputs, the conv kernel's roundings (causal_conv.h): pre = round(conv), y =
// round(silu(pre)). Included by those kernels' translation units only.
#include <cmath>
#include <cstring>
#include <type_traits>

#include "s0/nn/simd.h"

namespace s0::nn::step_conv {

using namespace simd;

// The conv's pre-activation of channel c from its Kh = Kc-1 history inputs hc and the current
// input xc: acc = 0, acc = fma(w[j], in_j, acc) over the history then the current input,
// plus the bias. Written with explicit fmas so that the 16-channel AVX-512 path below (its
// lanes, the same operations) and this scalar path give the same bits (by construction: the
// tests check each path against the reference ops, not the two against each other).
template <class S>
S0_INLINE float conv_pre_one(const float* w, const typename S::Raw* hc, typename S::Raw xc, const float* bias,
                             int64_t Kh) {
  float acc = 0;
  for (int64_t j = 0; j < Kh; ++j) acc = std::fma(w[j], S::load(hc[j]), acc);
  acc = std::fma(w[Kh], S::load(xc), acc);
  return bias ? acc + *bias : acc;
}

// pre[i] for the n channels from c0 (history h [Cd, Kh], weights w [Cd, Kc], x the current
// inputs), 16 at a time: the block's history converted to f32 on the stack, each tap's
// inputs and weights gathered across the 16 channels.
template <class S>
__attribute__((target("avx512f,avx512dq,avx512bw"))) void conv_pre_avx512(const typename S::Raw* h,
                                                                          const typename S::Raw* x, const float* w,
                                                                          const float* bias, int64_t c0, int64_t n,
                                                                          int64_t Kc, float* pre) {
  const int64_t Kh = Kc - 1;
  constexpr int64_t kMaxKh = 8;
  float hb[16 * kMaxKh];
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i lane_kh = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(Kh)));
  const __m512i lane_kc = _mm512_mullo_epi32(lane, _mm512_set1_epi32(static_cast<int>(Kc)));
  int64_t i = 0;
  if (Kh <= kMaxKh)
    for (; i + 16 <= n; i += 16) {
      const int64_t c = c0 + i;
      for (int64_t k = 0; k < 16 * Kh; ++k) hb[k] = S::load(h[c * Kh + k]);
      __m512 acc = _mm512_setzero_ps();
      for (int64_t j = 0; j < Kh; ++j) {
        const __m512i at = _mm512_add_epi32(lane_kc, _mm512_set1_epi32(static_cast<int>(j)));
        const __m512 wv = _mm512_i32gather_ps(at, w + c * Kc, 4);
        const __m512 hv = _mm512_i32gather_ps(_mm512_add_epi32(lane_kh, _mm512_set1_epi32(static_cast<int>(j))), hb, 4);
        acc = _mm512_fmadd_ps(wv, hv, acc);
      }
      float xb[16];
      for (int64_t k = 0; k < 16; ++k) xb[k] = S::load(x[c + k]);
      const __m512i at = _mm512_add_epi32(lane_kc, _mm512_set1_epi32(static_cast<int>(Kh)));
      acc = _mm512_fmadd_ps(_mm512_i32gather_ps(at, w + c * Kc, 4), _mm512_loadu_ps(xb), acc);
      if (bias) acc = _mm512_add_ps(acc, _mm512_loadu_ps(bias + c));
      _mm512_storeu_ps(pre + i, acc);
    }
  for (; i < n; ++i) {
    const int64_t c = c0 + i;
    pre[i] = conv_pre_one<S>(w + c * Kc, h + c * Kh, x[c], bias ? bias + c : nullptr, Kh);
  }
}

// Channels [c0, c0 + n) of one row into y (f32 holding dtype-rounded values), e scratch [n]:
// x the row's current conv inputs (indexed by channel), h its history [C, Kc-1], w [C, Kc],
// bias [C] or null. Then the channels' history moves on by one token (the block shifted down
// one element, each channel's last tap set to its current input). Exp: simd::dispatch's
// exp; with ExpVec (an AVX-512 build) the pre-activations go 16 channels at a time.
template <class T, class Exp>
S0_INLINE void conv_silu_channels(typename St<T>::Raw* h, const typename St<T>::Raw* x, const float* w,
                                  const float* bias, int64_t Kc, int64_t c0, int64_t n, float* y, float* e, Exp exp) {
  using S = St<T>;
  const int64_t Kh = Kc - 1;
  if constexpr (std::is_same_v<Exp, ExpVec>) {
    conv_pre_avx512<S>(h, x, w, bias, c0, n, Kc, y);
  } else {
    for (int64_t i = 0; i < n; ++i)
      y[i] = conv_pre_one<S>(w + (c0 + i) * Kc, h + (c0 + i) * Kh, x[c0 + i], bias ? bias + c0 + i : nullptr, Kh);
  }
  if (Kh > 0 && n > 0) {
    std::memmove(h + c0 * Kh, h + c0 * Kh + 1, sizeof(*h) * (n * Kh - 1));
    for (int64_t i = 0; i < n; ++i) h[(c0 + i) * Kh + Kh - 1] = x[c0 + i];
  }
  for (int64_t i = 0; i < n; ++i) {
    y[i] = S::round(y[i]);
    e[i] = -y[i];
  }
  exp(e, e, n);
  for (int64_t i = 0; i < n; ++i) y[i] = S::round(y[i] / (1.f + e[i]));
}

}  // namespace s0::nn::step_conv
