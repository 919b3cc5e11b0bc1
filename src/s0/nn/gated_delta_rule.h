#pragma once
// The gated delta rule (GatedDeltaNet's recurrence), twice: the step-by-step recurrence
// (the definition; decode) and the chunked form (prefill and training). Both take an
// initial state and return the final one, and both are differentiable with respect to
// every input, the initial state included (libtorch autograd; on CPU float32 the chunked
// form's gradients come from the hand-written backward of gdr_fast.h).
//
// Shapes (value-head major; q/k already expanded to the value heads):
//   q, k  [B, H, L, K]     v  [B, H, L, V]     g, beta  [B, H, L]
//   state [B, H, K, V]     axis 2 = key dim (contracted with k and q), axis 3 = value dim.
// Per head, for t = 1..L:
//   S  <- exp(g_t) S;  d_t = beta_t (v_t - S^T k_t);  S <- S + k_t d_t^T;  o_t = S^T q_t
// The math runs in the dtype of the inputs (the model casts to float32; tests use float64).
#include "s0/util/torch.h"

namespace s0::nn {

struct GdrResult {
  Tensor out;    // [B, H, L, V]
  Tensor state;  // [B, H, K, V], the state after the last token
};

// The definition: one token at a time. `state0` may be undefined (= zeros).
GdrResult gated_delta_rule_recurrent(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& g, const Tensor& beta, const Tensor& state0);

// The chunked (WY) form; chunks are aligned to the start of the call and the tail is
// zero-padded (padded steps neither decay nor write the state).
GdrResult gated_delta_rule_chunked(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& g, const Tensor& beta, const Tensor& state0,
                                   int64_t chunk_size = 64);

// The chunked form in ATen ops (any dtype; differentiable through libtorch autograd).
// gated_delta_rule_chunked runs this except for CPU float32 when oneDNN's sgemm is
// available, where it takes the per-head kernels of gdr_fast.h (with gradients: a custom
// autograd Function); float64 always lands here and serves as the reference.
GdrResult gated_delta_rule_chunked_aten(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const Tensor& g, const Tensor& beta, const Tensor& state0,
                                        int64_t chunk_size = 64);

// Decode fast path: one token (L = 1), updating `state` in place, no autograd.
// Returns o [B, H, 1, V].
Tensor gated_delta_rule_step_(Tensor& state, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& g, const Tensor& beta);

}  // namespace s0::nn
