#pragma once
// Attention's operators: partial NeoX RoPE, the KV cache append, causal GQA attention. ATen
// ops only (no hand-written kernels). Rounding points follow the Hugging Face reference (see
// shared spec qwen35.md section 8).
#include "s0/util/torch.h"

namespace s0::nn {

// Partial NeoX ("rotate_half") RoPE on the first `rotary_dim` dims of x [B, L, heads, hd]
// at positions start..start+L-1. inv_freq [rotary_dim/2] float32. cos/sin are rounded to
// x's dtype before use.
Tensor apply_rope(const Tensor& x, const Tensor& inv_freq, int64_t start);
Tensor rope_inv_freq(int64_t rotary_dim, double theta);

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
