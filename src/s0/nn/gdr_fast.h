#pragma once
// Chunked gated delta rule on CPU float32: per-head WY chunks with oneDNN's sgemm (found at
// run time; an in-house AVX-512 kernel without it), all heads in parallel. Same math and chunk alignment as
// gated_delta_rule_chunked; tests hold both against the recurrence.
//   - gated_delta_rule_chunked_fast: inference (no autograd).
//   - gated_delta_rule_chunked_fast_grad: differentiable (a custom autograd Function whose
//     backward is a hand-written per-head chunked reverse pass); gradients for q, k, v, g,
//     beta and the initial state, from gradients on the output and/or the final state.
#include "s0/nn/gated_delta_rule.h"

namespace s0::nn {

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
