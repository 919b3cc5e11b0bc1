#pragma once
// Several adapters on one sequence (an S0 state set with a state offset, LoRA with S0, ...):
// initial states from whichever member gives one for a layer (two members giving the same
// layer is an error), linear and readout hooks applied in member order, at most one prefix.
#include <memory>
#include <vector>

#include "s0/models/adapter.h"

namespace s0::adapters {

class AdapterStack : public models::Adapter {
 public:
  explicit AdapterStack(std::vector<std::shared_ptr<const models::Adapter>> members);
  Tensor initial_state(int64_t layer) const override;
  std::vector<int64_t> state_layers() const override;
  bool has_linear_hook() const override { return linear_; }
  Tensor linear_output(const std::string& name, const Tensor& x, const Tensor& y) const override;
  bool has_readout_hook() const override { return readout_; }
  Tensor recurrent_readout(int64_t layer, const Tensor& query, const Tensor& o) const override;
  int64_t prefix_length() const override { return prefix_ ? prefix_->prefix_length() : 0; }
  std::pair<Tensor, Tensor> prefix_kv(int64_t layer) const override {
    return prefix_ ? prefix_->prefix_kv(layer) : std::pair<Tensor, Tensor>{};
  }

 private:
  std::vector<std::shared_ptr<const models::Adapter>> members_;
  const models::Adapter* prefix_ = nullptr;  // the one member with a prefix, if any
  bool linear_ = false, readout_ = false;
};

// nullptr members are skipped; one member is returned as is; none gives nullptr.
std::shared_ptr<const models::Adapter> stack(std::vector<std::shared_ptr<const models::Adapter>> members);

}  // namespace s0::adapters
