#include "s0/train/objective.h"

#include "s0/nn/linear.h"
#include "s0/util/error.h"

#include <ATen/record_function.h>

namespace s0::train {

namespace {

// Rows of the hidden states that predict completion tokens, and those tokens.
struct Targets {
  Tensor rows, labels;
};

Targets targets_of(const Example& ex) {
  if (ex.ids.size() != ex.target.size())
    throw Error("training example: ids and target mask differ in length");
  std::vector<int64_t> rows, labels;
  for (size_t t = 1; t < ex.ids.size(); ++t)
    if (ex.target[t]) rows.push_back(static_cast<int64_t>(t) - 1), labels.push_back(ex.ids[t]);
  if (rows.empty()) throw Error("training example has no completion tokens to learn from");
  return {at::tensor(rows, at::kLong), at::tensor(labels, at::kLong)};
}

}  // namespace

Tensor completion_loss(models::CausalLM& model, const Example& ex, const models::StateMap* states) {
  return completion_loss(model, ex, states ? std::make_shared<models::InitialStates>(*states) : nullptr);
}

Tensor completion_loss(models::CausalLM& model, const Example& ex, std::shared_ptr<const models::Adapter> adapter) {
  Targets tg = targets_of(ex);
  models::Cache cache = model.new_cache(1, std::move(adapter));
  Tensor h = model.hidden(at::tensor(ex.ids, at::kLong).view({1, -1}), cache)[0];  // [L, D]
  return at::cross_entropy_loss(model.logits(h.index_select(0, tg.rows)), tg.labels);
}

LossAndGrad completion_loss_and_grad(models::CausalLM& model, const Example& ex,
                                     const models::StateMap& states, bool keep_projections) {
  Targets tg = targets_of(ex);
  const int64_t N = model.num_layers();
  Tensor ids = at::tensor(ex.ids, at::kLong).view({1, -1});
  // 1. Forward without autograd, keeping each layer's input (and, for families that split
  //    their layers, the residual stream after the mixer).
  const bool split = model.splits_layers();
  std::vector<Tensor> inputs(N + 1), mids(N);
  nn::LinearTape tape;
  nn::LinearTape* tp = keep_projections ? &tape : nullptr;
  using Mode = nn::LinearTape::Mode;
  {
    RECORD_FUNCTION("s0::forward_no_grad", std::vector<c10::IValue>());
    NoGrad ng;
    for (auto id : ex.ids)
      if (id < 0 || id >= model.vocab_size())
        throw Error("training example: token id " + std::to_string(id) + " out of range [0, " +
                    std::to_string(model.vocab_size()) + ")");
    models::Cache cache = model.new_cache(1, &states);  // the adapter door
    const models::Adapter* adapter = cache.adapter.get();
    Tensor h = model.embed(ids);
    for (int64_t l = 0; l < N; ++l) {
      inputs[l] = h;
      if (split) {  // the output projections are never replayed: not kept
        Tensor core;
        {
          nn::LinearTapeScope rec(tp, Mode::kRecord);
          core = model.mixer_core(l, h, cache.layers[l], 0, adapter);
        }
        mids[l] = h + nn::linear(core, model.mixer_out_weight(l));
        {
          nn::LinearTapeScope rec(tp, Mode::kRecord);
          core = model.mlp_core(l, mids[l]);
        }
        h = mids[l] + nn::linear(core, model.mlp_down_weight(l));
      } else {
        nn::LinearTapeScope rec(tp, Mode::kRecord);
        h = model.layer(l, h, cache.layers[l], 0, adapter);
      }
    }
    inputs[N] = h;
  }
  // 2. Loss and its gradient w.r.t. the last layer's output.
  at::AutoGradMode grad_on(true);
  LossAndGrad out;
  out.kept_bytes = tape.bytes;
  Tensor hN = inputs[N].detach().requires_grad_(true);
  RECORD_FUNCTION("s0::loss_and_head_grad", std::vector<c10::IValue>());
  Tensor rows = model.final_norm(hN)[0].index_select(0, tg.rows);
  const auto n = static_cast<double>(tg.rows.size(0));
  auto ce = model.rows_cross_entropy(rows.detach(), tg.labels, 1.0 / n);
  out.loss = ce.loss_sum / n;
  Tensor g = torch::autograd::grad({rows}, {hN}, {ce.grad})[0];
  // 3. Layers from the last to the first, each recomputed with autograd from its input and
  //    its initial state (a fresh cache entry: the whole example is one call from position 0).
  //    Split layers: the MLP half from the kept mid-stream x, the mixer half from the input;
  //    the output projections' input gradients are plain products with their weights
  //    (d core = d out W), so their forward GEMMs are not recomputed.
  const auto sdt = model.dtype() == at::kDouble ? at::kDouble : at::kFloat;
  for (int64_t l = N - 1; l >= 0; --l) {
    Tensor x = inputs[l].detach().requires_grad_(l > 0);
    std::vector<Tensor> wrt;
    if (l > 0) wrt.push_back(x);
    // The layer's state as a fresh autograd leaf, entering through the adapter door.
    Tensor s_leaf;
    models::StateMap leaf;
    auto it = states.find(l);
    if (it != states.end()) {
      s_leaf = it->second.detach().to(sdt).requires_grad_(true);
      leaf[l] = s_leaf;
      wrt.push_back(s_leaf);
    }
    const models::InitialStates leaf_adapter(std::move(leaf));
    models::LayerCache c = model.new_layer_cache(l, 1, &leaf_adapter);
    if (wrt.empty()) break;  // layer 0 without a state: nothing left to differentiate
    RECORD_FUNCTION("s0::layer_recompute_backward", std::vector<c10::IValue>());
    nn::LinearTapeScope replay(tp, Mode::kReplay);
    std::vector<Tensor> gr;
    if (split) {
      Tensor xm = mids[l].detach().requires_grad_(true);
      Tensor act = model.mlp_core(l, xm);
      Tensor dx = g + torch::autograd::grad({act}, {xm}, {at::matmul(g, model.mlp_down_weight(l))})[0];
      Tensor core = model.mixer_core(l, x, c, 0, &leaf_adapter);
      gr = torch::autograd::grad({core}, wrt, {at::matmul(dx, model.mixer_out_weight(l))});
      if (l > 0) gr[0] = gr[0] + dx;  // the residual path
    } else {
      gr = torch::autograd::grad({model.layer(l, x, c, 0, &leaf_adapter)}, wrt, {g});
    }
    size_t k = 0;
    if (l > 0) g = gr[k++];
    if (s_leaf.defined()) out.grads[l] = gr[k];
  }
  out.replayed = tape.replayed;
  return out;
}

}  // namespace s0::train
