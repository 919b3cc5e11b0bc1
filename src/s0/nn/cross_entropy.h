#pragma once
// The training loss head: cross-entropy of rows of hidden states through the LM head, as a
// fused CPU kernel that never materialises more than a chunk of logits and returns the
// gradient w.r.t. the hidden rows directly, and its definition through full logits and
// libtorch autograd.
#include "s0/util/torch.h"

namespace s0::nn {

// Cross-entropy of logits = h W^T (rows of h [M, D], W [V, D], both of the model dtype;
// logits rounded to it, as the model's lm_head output is) against labels [M] (int64).
// The logits are multiplied by `logit_multiplier` in f32 (Falcon-H1's lm_head_multiplier).
// Returns the summed loss over the rows (computed in f32/f64) and d(scale * sum)/dh
// [M, D] in h's dtype, without materialising more than `chunk` rows of logits at a time.
// Always the fused kernel (CPU; bf16, f32, f64).
struct RowsCrossEntropy {
  double loss_sum = 0;
  Tensor grad;
};
RowsCrossEntropy cross_entropy_rows(const Tensor& h, const Tensor& w, const Tensor& labels, double scale,
                                    int64_t chunk = 256, double logit_multiplier = 1.0);

// The definition: all logits at once (h W^T rounded to the dtype, then times the multiplier
// in f32/f64), summed at::cross_entropy_loss, gradient w.r.t. h by libtorch autograd.
RowsCrossEntropy cross_entropy_rows_reference(const Tensor& h, const Tensor& w, const Tensor& labels, double scale,
                                              double logit_multiplier = 1.0);

}  // namespace s0::nn
