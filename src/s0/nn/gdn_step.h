#pragma once
// One decode step of a GatedDeltaNet layer (after its input projections, before out_proj)
// for B sequences in one fused CPU kernel: causal conv + SiLU over the q|k|v channels (the
// conv history updated in place), L2-normalised q and k, beta = sigmoid(b), the gate
// neg_A * softplus(a + dt_bias), the gated delta rule step (the state updated in place,
// read once and written once) and the gated RMSNorm with z. One task per (row, key head),
// all tasks in parallel; a row's numbers never depend on the other rows.
//
// It computes what the unfused decode path computes (causal_conv_silu, l2_norm_heads,
// sigmoid/softplus, gated_delta_rule_step_, gated_rms_norm_heads) with the same rounding
// points; only the order of the float sums inside the recurrence differs, so results agree
// to float rounding (tests/nn/test_gdn_step.cpp holds it against the reference ops).
#include <vector>

#include "s0/nn/step_cache.h"
#include "s0/util/torch.h"

namespace s0::nn {

// The layer's sizes: key heads, value heads (a multiple of Hk), head dims, conv taps.
struct GdnStepShape {
  int64_t Hk = 0, Hv = 0, dk = 0, dv = 0;
};

// A group of consecutive rows continuing one cache (step_cache.h).
using GdnStepCache = RecurrentStepCache;

// Whether gdn_decode_step handles this model dtype on this device (CPU bf16 or f32).
bool gdn_step_supported(const Tensor& x);

// Inputs for B rows (model dtype, [B, n] with contiguous rows): qkv [B, 2 Hk dk + Hv dv]
// (in_proj_qkv), z [B, Hv dv], b [B, Hv], a [B, Hv]. Weights: conv_w [C, Kc] f32,
// neg_A and dt_bias [Hv] f32, norm_w [dv] model dtype. Returns [B, Hv dv] (model dtype):
// the gated RMSNorm of the recurrence's readout, ready for out_proj.
Tensor gdn_decode_step(const Tensor& qkv, const Tensor& z, const Tensor& b, const Tensor& a,
                       const Tensor& conv_w, const Tensor& neg_A, const Tensor& dt_bias,
                       const Tensor& norm_w, const GdnStepShape& shape, double norm_eps,
                       const std::vector<GdnStepCache>& caches);

}  // namespace s0::nn
