#pragma once
// The S0 training objective: completion-only next-token cross-entropy.
#include <cstdint>
#include <vector>

#include "s0/models/model.h"

namespace s0::train {

// One training sequence. target[t] = 1 when token t belongs to the completion (it is then
// predicted from position t-1 and counted in the loss); prompt tokens have 0.
struct Example {
  std::vector<int64_t> ids;
  std::vector<uint8_t> target;
  int64_t num_targets() const;  // completion tokens after the first position
};

// Mean cross-entropy over the completion tokens of `ex`, with the model's recurrent layers
// starting from `states` (nullptr: zeros). Differentiable w.r.t. the states; only the
// completion rows of the logits are formed. Throws when the example has no target.
Tensor completion_loss(models::CausalLM& model, const Example& ex, const models::StateMap* states);

// The same loss and its gradient w.r.t. every state in `states`, computed with per-layer
// recomputation: a forward pass without autograd keeps only each layer's input
// ([L, D] per layer), then each layer is recomputed with autograd from the last to the
// first, so peak memory stays near one layer's activations instead of all of them.
struct LossAndGrad {
  double loss = 0;
  models::StateMap grads;  // d loss / d state, for every layer in `states`
};
LossAndGrad completion_loss_and_grad(models::CausalLM& model, const Example& ex,
                                     const models::StateMap& states);

}  // namespace s0::train
