#pragma once
// The gated delta rule (GatedDeltaNet's recurrence), twice: the step-by-step recurrence
// (the definition; decode) and the chunked form (prefill and training). Both take an
// initial state and return the final one, and both are differentiable with respect to
// every input, the initial state included (libtorch autograd; on CPU float32 the chunked
// form's gradients come from the hand-written backward in gated_delta_rule_fast.cpp).
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
// gated_delta_rule_chunked runs this except for CPU float32 when the fast kernels are
// available (gdr_fast_available), where it takes them (with gradients: a custom autograd
// Function); float64 always lands here and serves as the reference.
GdrResult gated_delta_rule_chunked_aten(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const Tensor& g, const Tensor& beta, const Tensor& state0,
                                        int64_t chunk_size = 64);

// Decode fast path: one token (L = 1), updating `state` in place, no autograd.
// Returns o [B, H, 1, V].
Tensor gated_delta_rule_step_(Tensor& state, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& g, const Tensor& beta);

// ---- the CPU float32 kernels (gated_delta_rule_fast.cpp) ----------------------------------
// Chunked gated delta rule on CPU float32: per-head WY chunks with oneDNN's sgemm (found at
// run time; an in-house AVX-512 kernel without it), all heads in parallel. Same math and
// chunk alignment as gated_delta_rule_chunked; tests hold both against the recurrence.
// gated_delta_rule_chunked chooses them; they are public for tests and benchmarks.
//   - gated_delta_rule_chunked_fast: inference (no autograd).
//   - gated_delta_rule_chunked_fast_grad: differentiable (a custom autograd Function whose
//     backward is a hand-written per-head chunked reverse pass); gradients for q, k, v, g,
//     beta and the initial state, from gradients on the output and/or the final state.

bool gdr_fast_available();

// The in-house small-matrix product (row-major, sgemm argument order): C = alpha op(A) op(B)
// + beta C, op = 'N' or 'T'. The AVX-512 kernel where the CPU has it (the fast path's
// fallback when oneDNN is not in the process), else the fast path's sgemm. For tests.
void gdr_sgemm(char ta, char tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

GdrResult gated_delta_rule_chunked_fast(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                        const Tensor& beta, const Tensor& state0, int64_t chunk_size = 64);

GdrResult gated_delta_rule_chunked_fast_grad(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                             const Tensor& beta, const Tensor& state0, int64_t chunk_size = 64);

}  // namespace s0::nn
