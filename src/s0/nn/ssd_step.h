#pragma once
// One decode step of a Mamba-2 (SSD) mixer (Falcon-H1; after in_proj and the muP vector,
// before out_proj) for B sequences in one fused CPU kernel: causal conv + SiLU over the
// x|B|C channels (the conv history updated in place), dt = softplus(dt + dt_bias) clamped
// to the time-step limits, the SSD step S <- exp(dt A) S + dt x B^T and y = S C (the state
// updated in place, read once and written once), the D skip, and the gate y * silu(z) or
// the grouped gated RMSNorm (before or after the gate). One task per (row, head), then one
// per (row, group) for what a group shares (the B|C conv history, the norm); a row's
// numbers never depend on the other rows nor on the thread count.
//
// It computes what the unfused decode path computes (causal_conv_bias_silu, the f32
// conversion, at::softplus and clamp, ssd_step_, the D skip, at::silu and the group norm)
// with the same rounding points: the conv rounded to the model dtype and its SiLU rounded,
// everything after in f32, the output rounded once. Only the order of float sums (the
// readout S C, the norm's mean) and FMA contraction differ, so results agree to float
// rounding (tests/nn/test_ssd_step.cpp holds it against the reference ops).
#include <limits>
#include <vector>

#include "s0/nn/step_cache.h"
#include "s0/util/torch.h"

namespace s0::nn {

// The layer's sizes: H heads of dim P in G groups (head h reads group h / (H/G)), state N.
// d_ssm = H P; the conv runs over Cd = H P + 2 G N channels.
struct SsdStepShape {
  int64_t H = 0, P = 0, G = 0, N = 0;
};

// The layer's parameters and options. conv_w [Cd, Kc] f32 (tap Kc-1 multiplies the current
// token), conv_b [Cd] f32 or undefined, dt_bias, neg_A (= -exp(A_log)), D [H] f32. norm_w
// [H P] in the model dtype selects the grouped gated RMSNorm (G groups, eps norm_eps):
// norm_before_gate false: norm(y silu(z)) w; true: norm(y) w silu(z). Undefined norm_w:
// the plain gate y silu(z). dt is clamped to [dt_min, dt_max] after the softplus.
struct SsdStepLayer {
  Tensor conv_w, conv_b, dt_bias, neg_A, D, norm_w;
  bool norm_before_gate = false;
  double norm_eps = 1e-6;
  double dt_min = 0, dt_max = std::numeric_limits<double>::infinity();
};

// A group of consecutive rows continuing one cache (step_cache.h).
using SsdStepCache = RecurrentStepCache;

// Whether ssd_decode_step handles this model dtype on this device (CPU bf16 or f32).
bool ssd_step_supported(const Tensor& x);

// zxbcdt [B, 2 H P + 2 G N + H] (model dtype; rows [z | x | B | C | dt], contiguous rows):
// the in_proj output of one token per row, times the muP vector. The caches hold B rows in
// all, in row order. Returns [B, H P] in the model dtype, ready for out_proj.
Tensor ssd_decode_step(const Tensor& zxbcdt, const SsdStepLayer& layer, const SsdStepShape& shape,
                       const std::vector<SsdStepCache>& caches);

}  // namespace s0::nn
