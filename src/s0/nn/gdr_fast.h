#pragma once
// Chunked gated delta rule on CPU float32: per-head WY chunks with oneDNN's sgemm (found at
// run time), all heads in parallel. Same math and chunk alignment as
// gated_delta_rule_chunked; tests hold both against the recurrence.
//   - gated_delta_rule_chunked_fast: inference (no autograd).
//   - gated_delta_rule_chunked_fast_grad: differentiable (a custom autograd Function whose
//     backward is a hand-written per-head chunked reverse pass); gradients for q, k, v, g,
//     beta and the initial state, from gradients on the output and/or the final state.
#include "s0/nn/gated_delta_rule.h"

namespace s0::nn {

bool gdr_fast_available();

GdrResult gated_delta_rule_chunked_fast(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                        const Tensor& beta, const Tensor& state0, int64_t chunk_size = 64);

GdrResult gated_delta_rule_chunked_fast_grad(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                                             const Tensor& beta, const Tensor& state0, int64_t chunk_size = 64);

}  // namespace s0::nn
