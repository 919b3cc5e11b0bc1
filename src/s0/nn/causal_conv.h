#pragma once
// Causal depthwise conv over time + SiLU (the short conv of GatedDeltaNet and Mamba-2) with a
// history of the last Kc-1 raw inputs: the definition in ATen ops, the fused CPU kernel with a
// hand-written input-gradient backward, and the one entry point that chooses between them.
// Tap Kc-1 multiplies the current token. The conv is summed in f32 (f64 for f64), rounded to
// x's dtype, then SiLU in f32 rounded again (the Hugging Face reference's rounding points).
#include "s0/util/torch.h"

namespace s0::nn {

// Causal depthwise conv over time + SiLU with a history of the last Kc-1 raw inputs.
// x [B, L, C] (dtype), weight [C, Kc] float32, history [B, C, Kc-1] or undefined (zeros).
// Returns silu(conv) [B, L, C] in x's dtype; `new_history` receives the last Kc-1 inputs
// (never part of an autograd graph). Runs the fused kernel (conv_silu: gradient w.r.t.
// x only) on CPU unless the weight, bias or history requires grad (pretraining), which
// takes the reference ATen ops under plain autograd.
Tensor causal_conv_silu(const Tensor& x, const Tensor& weight, const Tensor& history,
                        Tensor& new_history);
// The same with a per-channel bias [C] (float32) added before the SiLU.
Tensor causal_conv_bias_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history,
                             Tensor& new_history);

// The definition: Kc shifted multiply-adds over [history | x] (ATen ops; differentiable in
// every input under plain autograd, with a hand-written input gradient for the taps when the
// weight is frozen). x [B, L, C], weight [C, Kc] (f32, or f64 for f64 x), bias [C] or
// undefined, history [B, C, Kc-1] or undefined (zeros). Returns [B, L, C] in x's dtype
// (a transposed view).
Tensor causal_conv_silu_reference(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  const Tensor& history);

// The fused kernel: silu(causal depthwise conv over time (+ bias)) with a history of Kc-1
// earlier inputs. x [B, L, C] (bf16, f32 or f64), weight [C, Kc] (f32, or f64 for f64 x),
// bias [C] or undefined, history [B, C, Kc-1] (x's dtype) or undefined (zeros). Returns
// [B, L, C] contiguous in x's dtype. Differentiable with respect to x only (the history and
// weights are treated as constants; causal_conv_silu routes other cases to the reference).
// For tests and benchmarks; models call causal_conv_silu.
Tensor conv_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history);

}  // namespace s0::nn
