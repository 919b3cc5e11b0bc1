#pragma once
// Fused CPU kernels for the training hot path, each one pass over memory where plain ATen
// would take several, with hand-written input-gradient backwards (S0 training needs
// gradients with respect to activations and initial states only: weights are frozen).
// Storage dtypes bf16, f32 and f64 (f64 for the finite-difference tests); the math runs in
// f32 (f64 for f64) and rounds to the storage dtype at the points the Hugging Face
// reference rounds. AVX-512 code paths are chosen at run time; the portable paths compute
// the same formulas.
#include "s0/util/torch.h"

namespace s0::nn {

// silu(causal depthwise conv over time (+ bias)) with a history of Kc-1 earlier inputs.
// x [B, L, C] (dtype), weight [C, Kc] (f32, or f64 for f64 x), bias [C] or undefined,
// history [B, C, Kc-1] (x's dtype) or undefined (zeros). Tap Kc-1 multiplies the current
// token. Returns [B, L, C] contiguous in x's dtype: the conv is summed in f32, rounded to
// the dtype, then SiLU in f32 rounded again. Differentiable with respect to x only (the
// history and weights are treated as constants; the caller refuses other cases).
Tensor conv_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history);

// silu(g) * u with the reference's roundings: silu(g) rounded to the dtype, the product
// rounded to the dtype. g, u [..., I] of one dtype. Differentiable with respect to g and u.
Tensor silu_mul(const Tensor& g, const Tensor& u);

// (1 + w) RMSNorm over the last dim (x and w of one dtype; f32 math, one rounding), the
// kernel behind nn::rms_norm_1p. Differentiable in x (w is a constant here).
Tensor rms_norm_1p_fused(const Tensor& x, const Tensor& w, double eps);

// GatedDeltaNet's kernel inputs: x [B, L, H, d] (bf16/f32, last dim contiguous, e.g. a
// head-split slice of the conv output) -> scale * x / sqrt(sum(x^2) + eps) as float32
// [B, H, L, d] contiguous (head-major, the recurrence's layout). Differentiable in x.
Tensor l2_norm_heads(const Tensor& x, double scale, double eps = 1e-6);

// GatedDeltaNet's gated RMSNorm on the recurrence output o [B, H, L, V] (float32) with the
// gate z [B, L, H, V] and weight w [V] (model dtype): o rounded to the dtype, normalised in
// f32 and rounded, times w (rounded), times silu(z) in f32, rounded. Returns [B, L, H*V]
// in the model dtype. Differentiable in o and z (and in w through the reference ops, for
// pretraining, when w requires grad).
Tensor gated_rms_norm_heads(const Tensor& o, const Tensor& z, const Tensor& w, double eps);

// Cross-entropy of logits = h W^T (rows of h [M, D], W [V, D], both of the model dtype;
// logits rounded to it, as the model's lm_head output is) against labels [M] (int64).
// The logits are multiplied by `logit_multiplier` in f32 (Falcon-H1's lm_head_multiplier).
// Returns the summed loss over the rows (computed in f32/f64) and d(scale * sum)/dh
// [M, D] in h's dtype, without materialising more than `chunk` rows of logits at a time.
struct RowsCrossEntropy {
  double loss_sum = 0;
  Tensor grad;
};
RowsCrossEntropy cross_entropy_rows(const Tensor& h, const Tensor& w, const Tensor& labels, double scale,
                                    int64_t chunk = 256, double logit_multiplier = 1.0);

}  // namespace s0::nn
