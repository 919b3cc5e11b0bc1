#pragma once
// Small shared operators: norms, RoPE, causal depthwise conv, KV append, attention.
// Rounding points follow the Hugging Face reference (see shared spec qwen35.md section 8).
#include "s0/util/torch.h"

namespace s0::nn {

// (1 + w) RMSNorm over the last dim: fp32 math, one rounding to x's dtype at the end.
Tensor rms_norm_1p(const Tensor& x, const Tensor& w, double eps);

// Plain RMSNorm (Llama/Falcon-H1 order): normalise in fp32, round to x's dtype, then times w.
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps);

// Gated RMSNorm of GatedDeltaNet: normalise o (fp32, rounded to dtype), times w (dtype,
// used as is), times silu(z) in fp32, rounded to dtype. o, z: [..., V]; w: [V].
Tensor gated_rms_norm(const Tensor& o, const Tensor& z, const Tensor& w, double eps,
                      at::ScalarType dtype);

// x * rsqrt(sum(x^2) + eps) over the last dim.
Tensor l2_norm(const Tensor& x, double eps = 1e-6);

// SiLU rounded once to x's dtype.
Tensor silu(const Tensor& x);


// Partial NeoX ("rotate_half") RoPE on the first `rotary_dim` dims of x [B, L, heads, hd]
// at positions start..start+L-1. inv_freq [rotary_dim/2] float32. cos/sin are rounded to
// x's dtype before use.
Tensor apply_rope(const Tensor& x, const Tensor& inv_freq, int64_t start);
Tensor rope_inv_freq(int64_t rotary_dim, double theta);

// Causal depthwise conv over time + SiLU with a history of the last Kc-1 raw inputs.
// x [B, L, C] (dtype), weight [C, Kc] float32, history [B, C, Kc-1] or undefined (zeros).
// Returns silu(conv) [B, L, C] in x's dtype; `new_history` receives the last Kc-1 inputs
// (never part of an autograd graph). Runs the fused kernel (nn::conv_silu: gradient w.r.t.
// x only) unless the weight, bias or history requires grad (pretraining), which takes the
// reference ATen ops under plain autograd.
Tensor causal_conv_silu(const Tensor& x, const Tensor& weight, const Tensor& history,
                        Tensor& new_history);
// The same with a per-channel bias [C] (float32) added before the SiLU.
Tensor causal_conv_bias_silu(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& history,
                             Tensor& new_history);

// Appends k, v [B, KV, L, hd] after `past` valid positions of the cache buffers and returns
// views of all past+L positions. Without autograd the buffers grow geometrically and are
// written in place (no per-token reallocation); with autograd they are concatenated.
void kv_append(Tensor& kbuf, Tensor& vbuf, const Tensor& k, const Tensor& v, int64_t past,
               Tensor& k_all, Tensor& v_all);

// Causal GQA attention. q [B, H, L, hd] at positions past..past+L-1; k, v [B, KV, past+L, hd].
// Scores in the model dtype, softmax in fp32 rounded back (HF eager). Returns [B, L, H*hd].
Tensor causal_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t past,
                        double scale);

}  // namespace s0::nn
