#pragma once
// One decode step of causal GQA attention with RoPE for B sequences in one fused CPU
// kernel: rotate the new query and key (partial NeoX RoPE at each sequence's position),
// append key and value to the sequence's KV cache in place, attend over the cache. One task
// per (row, KV head); a row's numbers never depend on the other rows.
//
// Same rounding points as the unfused path (apply_rope, kv_append, causal_attention: RoPE
// products and sum rounded to the model dtype, scores rounded then scaled and rounded,
// softmax in f32 rounded, the weighted sum of values accumulated in f32 and rounded); the
// order of the float sums differs, so results agree to float rounding
// (tests/nn/test_attention_step.cpp).
#include <vector>

#include "s0/util/torch.h"

namespace s0::nn {

// A group of consecutive rows continuing one KV cache: k, v [rows, KV, capacity, hd] with
// `past` valid positions (undefined when past is 0). Grown geometrically (as kv_append) when
// full, then written in place.
struct KvStepCache {
  Tensor* k = nullptr;
  Tensor* v = nullptr;
  int64_t past = 0;
  int64_t rows = 1;
};

// For tests: false makes the scores use the portable loop even where the AVX-512 one
// applies (default true). The portable loop's multiply-adds are fused or not as the compiler
// builds it (GCC fuses them at -O2 and above, not at -O1), so the two agree bitwise in the
// release build and to float rounding in general.
void attention_step_vector_scores(bool on);

// For tests: the raw dot products the AVX-512 scores start from, d[g * T1 + t] for G query
// rows q [G, hd] (f32) and T1 keys k [T1, hd] (bf16 bits when bf16, else f32), hd % 16 == 0:
// each of 16 lanes chains fused multiply-adds over the 16-wide chunks in order, then the
// lanes are added in order to 0. `reference` computes it with scalar std::fma; false from
// the vector path when the CPU lacks AVX-512.
bool attention_key_dots(const void* k, bool bf16, int64_t T1, int64_t hd, const float* q, int64_t G, float* d,
                        bool reference);

// Whether attention_decode_step handles this dtype and device (CPU bf16 or f32).
bool attention_step_supported(const Tensor& q);

// q [B, 1, H, hd] (normed, not rotated), k, v [B, 1, KV, hd] (k normed, not rotated); last
// dims contiguous, other strides free. inv_freq [rotary_dim / 2] f32. Returns the context
// [B, 1, H hd] in the model dtype.
Tensor attention_decode_step(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& inv_freq, double scale,
                             const std::vector<KvStepCache>& caches);

}  // namespace s0::nn
