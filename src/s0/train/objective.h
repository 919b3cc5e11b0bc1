#pragma once
// The S0 training objective: completion-only next-token cross-entropy.
#include <cstdint>
#include <vector>

#include "s0/models/model.h"
#include "s0/train/example.h"

namespace s0::train {

// Mean cross-entropy over the completion tokens of `ex`, with the model's recurrent layers
// starting from `states` (nullptr: zeros). Differentiable w.r.t. the states; only the
// completion rows of the logits are formed. Throws when the example has no target.
Tensor completion_loss(models::CausalLM& model, const Example& ex, const models::StateMap* states);
// The same with any adapter attached (LoRA, state offset, a stack); differentiable w.r.t.
// the adapter's tensors.
Tensor completion_loss(models::CausalLM& model, const Example& ex, std::shared_ptr<const models::Adapter> adapter);

// The same loss and its gradient w.r.t. every state in `states`, computed with per-layer
// recomputation: a forward pass without autograd keeps only each layer's input
// ([L, D] per layer), then each layer is recomputed with autograd from the last to the
// first, so peak memory stays near one layer's activations instead of all of them.
// keep_projections: the forward pass also keeps every layer's projection (GEMM) outputs
// (nn::LinearTape; 29.2 KB per token per layer in bf16 for the 0.8B shape) and the
// recomputation reuses them, redoing only elementwise work and the recurrence.
struct LossAndGrad {
  double loss = 0;
  models::StateMap grads;        // d loss / d state, for every layer in `states`
  int64_t kept_bytes = 0;        // projection outputs kept at the end of the forward pass
  int64_t replayed = 0;          // of them, reused by the recomputation (the rest recomputed)
};
LossAndGrad completion_loss_and_grad(models::CausalLM& model, const Example& ex,
                                     const models::StateMap& states, bool keep_projections = true);

}  // namespace s0::train
