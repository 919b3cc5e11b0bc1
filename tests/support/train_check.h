#pragma once
// Checks shared by the training tests of every model family and adapter kind.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "s0/train/objective.h"
#include "s0/train/trainer.h"

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

// n examples: a random prompt of 5 + i tokens, then 7 completion tokens.
inline std::vector<train::Example> toy_data(int64_t vocab, int n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<train::Example> out;
  for (int i = 0; i < n; ++i) {
    train::Example ex;
    Tensor p = at::randint(0, vocab, {5 + i}, gen, at::kLong);
    for (int64_t t = 0; t < p.size(0); ++t) ex.ids.push_back(p[t].item<int64_t>()), ex.target.push_back(0);
    for (int64_t t = 0; t < 7; ++t) ex.ids.push_back((5 * t + 2) % vocab), ex.target.push_back(1);
    out.push_back(ex);
  }
  return out;
}

// Central differences of the loss at a few coordinates of every parameter vs the method's
// analytic gradient.
inline void expect_grad_matches_fd(models::CausalLM& model, train::Method& method, const train::ParamMap& params,
                            const train::Example& ex, const std::string& what) {
  train::ParamMap grads;
  for (const auto& [n, p] : params) grads[n] = at::zeros_like(p);
  method.loss_and_grad(model, ex, params, grads, 1.0);
  // The frozen weights never get a gradient.
  for (const auto& [name, w] : model.linear_layers()) {
    EXPECT_FALSE(w.requires_grad()) << name;
    EXPECT_FALSE(w.grad().defined()) << name;
  }
  NoGrad ng;
  const double h = 1e-6;
  int checked = 0;
  for (const auto& [name, p] : params) {
    double gmax = grads.at(name).abs().max().item<double>();
    for (int s = 0; s < 2; ++s) {
      const int64_t idx = (s * 7919 + 13) % p.numel();
      auto at_delta = [&](double d) {
        train::ParamMap q = params;
        q[name] = p.clone();
        q[name].view(-1)[idx] += d;
        train::ParamMap dummy;
        for (const auto& [n2, t] : q) dummy[n2] = at::zeros_like(t);
        return method.loss_and_grad(model, ex, q, dummy, 1.0);
      };
      const double fd = (at_delta(h) - at_delta(-h)) / (2 * h);
      const double an = grads.at(name).view(-1)[idx].item<double>();
      EXPECT_NEAR(an, fd, 1e-6 * std::max(1.0, gmax)) << what << " " << name << "[" << idx << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

}  // namespace s0::testing
