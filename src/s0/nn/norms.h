#pragma once
// RMSNorm variants: (1 + w) RMSNorm (Qwen3.5), plain RMSNorm (Llama/Falcon-H1 order) and
// GatedDeltaNet's gated RMSNorm over heads. Each has its definition in ATen ops; the two on
// the training hot path also have a fused CPU kernel with a hand-written input-gradient
// backward, chosen by their entry point. Rounding points follow the Hugging Face reference
// (see shared spec qwen35.md section 8).
#include "s0/util/torch.h"

namespace s0::nn {

// (1 + w) RMSNorm over the last dim: fp32 math, one rounding to x's dtype at the end. The
// fused kernel on CPU when x and w share a dtype and w is a constant (differentiable in x);
// the reference ops otherwise (a trainable weight: pretraining).
Tensor rms_norm_1p(const Tensor& x, const Tensor& w, double eps);

// Plain RMSNorm (Llama/Falcon-H1 order): normalise in fp32, round to x's dtype, then times w.
// ATen ops only (no kernel).
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps);

// The same as one CPU kernel for inference (decode): each row computed alone, the same way
// whatever the number of rows or threads (ATen's vector and scalar paths round rsqrt
// differently, so rms_norm's numbers depend on where a row sits). x [..., D] and w [D] of
// one dtype (bf16, f32 or f64), no autograd; agrees with rms_norm to float rounding.
Tensor rms_norm_rows(const Tensor& x, const Tensor& w, double eps);

// GatedDeltaNet's gated RMSNorm on the recurrence output o [B, H, L, V] (float32) with the
// gate z [B, L, H, V] and weight w [V] (model dtype): o rounded to the dtype, normalised in
// f32 and rounded, times w (rounded), times silu(z) in f32, rounded. Returns [B, L, H*V]
// in the model dtype. Differentiable in o and z (and in w through the reference ops, for
// pretraining, when w requires grad). The fused kernel unless w requires grad.
Tensor gated_rms_norm_heads(const Tensor& o, const Tensor& z, const Tensor& w, double eps);

// ---- the definitions (ATen ops, plain autograd) -------------------------------------------

// rms_norm_1p's: (x r (1 + w)) in f32 (f64 for f64), r = (mean(x^2) + eps)^-1/2, rounded once.
Tensor rms_norm_1p_reference(const Tensor& x, const Tensor& w, double eps);

// Gated RMSNorm of GatedDeltaNet: normalise o (fp32, rounded to dtype), times w (dtype,
// used as is), times silu(z) in fp32, rounded to dtype. o, z: [..., V]; w: [V].
Tensor gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, double eps,
                      at::ScalarType dtype);

// gated_rms_norm_heads' definition: gated_rms_norm on o's [B, L, H, V] view in z's dtype,
// flattened to [B, L, H*V].
Tensor gated_rms_norm_heads_reference(const Tensor& o, const Tensor& z, const Tensor& w, double eps);

}  // namespace s0::nn
