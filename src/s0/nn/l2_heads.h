#pragma once
// L2-normalised heads, GatedDeltaNet's q and k: the definition in ATen ops and the fused CPU
// kernel (normalise, scale and reorder to the recurrence's head-major float32 layout in one
// pass) with a hand-written input-gradient backward.
#include "s0/util/torch.h"

namespace s0::nn {

// GatedDeltaNet's kernel inputs: x [B, L, H, d] (bf16/f32/f64, last dim contiguous, e.g. a
// head-split slice of the conv output) -> scale * x / sqrt(sum(x^2) + eps) as float32
// (f64 for f64) [B, H, L, d] contiguous (head-major, the recurrence's layout).
// Differentiable in x. Always the fused kernel.
Tensor l2_norm_heads(const Tensor& x, double scale, double eps = 1e-6);

// ---- the definitions (ATen ops, plain autograd) -------------------------------------------

// x * rsqrt(sum(x^2) + eps) over the last dim.
Tensor l2_norm(const Tensor& x, double eps = 1e-6);

// l2_norm_heads': l2_norm in f32 (f64 for f64) times scale, transposed to [B, H, L, d] and
// made contiguous.
Tensor l2_norm_heads_reference(const Tensor& x, double scale, double eps = 1e-6);

}  // namespace s0::nn
