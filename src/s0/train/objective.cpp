#include "s0/train/objective.h"

#include "s0/util/error.h"

namespace s0::train {

int64_t Example::num_targets() const {
  int64_t n = 0;
  for (size_t t = 1; t < target.size(); ++t) n += target[t] != 0;
  return n;
}

Tensor completion_loss(models::CausalLM& model, const Example& ex, const models::StateMap* states) {
  if (ex.ids.size() != ex.target.size())
    throw Error("training example: ids and target mask differ in length");
  std::vector<int64_t> rows, labels;
  for (size_t t = 1; t < ex.ids.size(); ++t)
    if (ex.target[t]) rows.push_back(static_cast<int64_t>(t) - 1), labels.push_back(ex.ids[t]);
  if (rows.empty()) throw Error("training example has no completion tokens to learn from");
  models::Cache cache = model.new_cache(1, states);
  Tensor h = model.hidden(at::tensor(ex.ids, at::kLong).view({1, -1}), cache)[0];  // [L, D]
  Tensor lg = model.logits(h.index_select(0, at::tensor(rows, at::kLong)));        // [n, V]
  return at::cross_entropy_loss(lg, at::tensor(labels, at::kLong));
}

}  // namespace s0::train
