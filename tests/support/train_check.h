#pragma once
// A check shared by the training tests of every model family.
#include <gtest/gtest.h>

#include "s0/train/objective.h"

namespace s0::testing {

// `kept` came from completion_loss_and_grad with the projection outputs kept (the default):
// it must have replayed some, and agree with a run that recomputes them (same loss; state
// gradients within tol relative to their largest element; tol 0 = bit for bit).
inline void expect_kept_projections_match(models::CausalLM& model, const train::Example& ex,
                                          const models::StateMap& states, const train::LossAndGrad& kept,
                                          double tol) {
  auto lean = train::completion_loss_and_grad(model, ex, states, /*keep_projections=*/false);
  EXPECT_GT(kept.replayed, 0);
  EXPECT_GT(kept.kept_bytes, 0);
  EXPECT_EQ(lean.replayed, 0);
  EXPECT_EQ(kept.loss, lean.loss);
  for (auto& [l, g] : lean.grads)
    EXPECT_LE((kept.grads.at(l) - g).abs().max().item<double>(), tol * g.abs().max().item<double>())
        << "layer " << l;
}

}  // namespace s0::testing
