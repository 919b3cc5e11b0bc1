#pragma once
// The adapter door: whatever is learned on a frozen model (S0 initial states, LoRA factors,
// state offsets, prefix KV) attaches to a sequence through this interface
// and nowhere else. Two ways in:
//   1. Cache creation (CausalLM::new_cache / new_layer_cache): the sequence's cache starts
//      from the adapter's initial recurrent states and its prefix keys/values.
//   2. Hook points the forward pass consults for every sequence that carries an adapter:
//      the output of a named linear layer, and the readout of a recurrent layer.
// Training and inference use the same door: the trainer hands the model an adapter whose
// tensors are autograd leaves, generation one whose tensors are fixed.
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "s0/util/torch.h"

namespace s0::models {

// Initial recurrent states: layer index -> the layer's native state shape, float32
// (GatedDeltaNet [H, K, V], Mamba-2 [H, P, N]).
using StateMap = std::map<int64_t, Tensor>;

class Adapter {
 public:
  virtual ~Adapter() = default;

  // The initial state of recurrent layer `layer` (native shape, no batch), or an undefined
  // tensor for zeros. Validated against the model when a cache is made from it.
  virtual Tensor initial_state(int64_t layer) const { return {}; }
  // The layers initial_state() answers for (new_cache checks they are recurrent layers).
  virtual std::vector<int64_t> state_layers() const { return {}; }

  // Hook: a linear layer's output. `name` is the weight's Hugging Face module name without
  // ".weight" ("layers.3.self_attn.q_proj"); x [rows, L, in], y = x W^T [rows, L, out] for
  // this adapter's rows only. Returns the output to use. Consulted only when
  // has_linear_hook() is true.
  virtual bool has_linear_hook() const { return false; }
  virtual Tensor linear_output(const std::string& name, const Tensor& x, const Tensor& y) const { return y; }

  // Hook: a recurrent layer's readout, in the family's head-major layout: the query that
  // reads the state (GatedDeltaNet q [rows, H, L, K]; Mamba-2 C [rows, H, L, N]) and the
  // readout o (GatedDeltaNet [rows, H, L, V]; Mamba-2 [rows, H, L, P]) before any gate,
  // norm or skip. Returns the readout to use (a state offset adds q . dS here). Consulted
  // only when has_readout_hook() is true.
  virtual bool has_readout_hook() const { return false; }
  virtual Tensor recurrent_readout(int64_t layer, const Tensor& query, const Tensor& o) const { return o; }

  // Prefix tuning (HF PEFT semantics): prefix_length() virtual tokens whose keys and values
  // sit in every attention layer's KV cache at positions 0 .. n-1, used as given (no
  // projection, no RoPE). The sequence's real tokens then start at position n (their RoPE
  // positions too) and attend to all n prefix slots. prefix_kv(layer) = {k, v}, each
  // [KV, n, head_dim] (any float dtype; cast to the model dtype when the cache is made),
  // for every attention layer of the model. Cache creation is the only place they enter.
  virtual int64_t prefix_length() const { return 0; }
  virtual std::pair<Tensor, Tensor> prefix_kv(int64_t layer) const { return {}; }
};

// The plainest adapter: fixed initial states, given already scaled (S0 inference), or
// autograd leaves (S0 training). Holds the tensors as given: gradients flow back to them.
class InitialStates : public Adapter {
 public:
  explicit InitialStates(StateMap states) : states_(std::move(states)) {}
  Tensor initial_state(int64_t layer) const override {
    auto it = states_.find(layer);
    return it == states_.end() ? Tensor() : it->second;
  }
  std::vector<int64_t> state_layers() const override {
    std::vector<int64_t> out;
    for (const auto& [l, s] : states_) out.push_back(l);
    return out;
  }
  const StateMap& states() const { return states_; }

 private:
  StateMap states_;
};

}  // namespace s0::models
