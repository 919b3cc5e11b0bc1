#include "s0/adapters/stack.h"

#include <set>

#include "s0/util/error.h"

namespace s0::adapters {

AdapterStack::AdapterStack(std::vector<std::shared_ptr<const models::Adapter>> members)
    : members_(std::move(members)) {
  std::set<int64_t> seen;
  for (const auto& m : members_) {
    for (auto l : m->state_layers())
      if (!seen.insert(l).second)
        throw Error("adapters: two attached adapters both give an initial state for layer " + std::to_string(l));
    if (m->prefix_length() > 0) {
      if (prefix_) throw Error("adapters: two attached adapters both carry a prefix");
      prefix_ = m.get();
    }
    linear_ = linear_ || m->has_linear_hook();
    readout_ = readout_ || m->has_readout_hook();
  }
}

Tensor AdapterStack::initial_state(int64_t layer) const {
  for (const auto& m : members_) {
    Tensor s = m->initial_state(layer);
    if (s.defined()) return s;
  }
  return {};
}

std::vector<int64_t> AdapterStack::state_layers() const {
  std::vector<int64_t> out;
  for (const auto& m : members_)
    for (auto l : m->state_layers()) out.push_back(l);
  return out;
}

Tensor AdapterStack::linear_output(const std::string& name, const Tensor& x, const Tensor& y) const {
  Tensor out = y;
  for (const auto& m : members_)
    if (m->has_linear_hook()) out = m->linear_output(name, x, out);
  return out;
}

Tensor AdapterStack::recurrent_readout(int64_t layer, const Tensor& query, const Tensor& o) const {
  Tensor out = o;
  for (const auto& m : members_)
    if (m->has_readout_hook()) out = m->recurrent_readout(layer, query, out);
  return out;
}

std::shared_ptr<const models::Adapter> stack(std::vector<std::shared_ptr<const models::Adapter>> members) {
  std::vector<std::shared_ptr<const models::Adapter>> live;
  for (auto& m : members)
    if (m) live.push_back(std::move(m));
  if (live.empty()) return nullptr;
  if (live.size() == 1) return live[0];
  return std::make_shared<AdapterStack>(std::move(live));
}

}  // namespace s0::adapters
