#pragma once
// S0 state sets: one float32 initial state per tuned recurrent layer, stored in the layout
// of the s0-tuning reference library (a directory):
//   states.safetensors  key = decimal layer index, unscaled float32 [H, K, V] / [H, P, N]
//   config.json         training config (n_steps, lr, l2_lambda, alpha, normalize, ...)
//   meta.json           {"arch", "recurrent_layers", "state_shape"}
// At inference the states are scaled: alpha * S, or alpha * S / ||S|| with `normalize`.
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/models/model.h"

namespace s0::adapters {

// The reference library's default alpha: 0.07 for gated_delta_net, 0.65 for mamba2.
double default_alpha(const std::string& arch);

// The one definition of how a stored state is injected: alpha * S, or alpha * S / ||S||_F
// with `normalize` (a zero state stays zero). Inference (StateSet::scaled) and training
// with --alpha-in-training both use it.
Tensor scale_state(const Tensor& s, double alpha, bool normalize);

struct StateSet {
  std::string arch;                  // "gated_delta_net" | "mamba2"
  std::vector<int64_t> state_shape;  // per layer, e.g. [H, K, V]
  models::StateMap states;           // unscaled, float32
  nlohmann::json config = nlohmann::json::object();

  double alpha() const;     // config "alpha", or the architecture default when null/absent
  bool normalize() const;   // config "normalize" (default false)
  // The states to inject: alpha * S (alpha * S / ||S||_F when normalizing; zero stays zero).
  models::StateMap scaled(std::optional<double> alpha_override = std::nullopt) const;
  // The same, as what a sequence carries through the adapter door.
  std::shared_ptr<const models::Adapter> adapter(std::optional<double> alpha_override = std::nullopt) const;
  int64_t num_bytes() const;
};

// The recurrent layers a spec selects: "all", "early" | "middle" | "late" (thirds of the
// recurrent layers, in order), or a list of model layer indices and ranges ("0-7,12"),
// each of which must be a recurrent layer.
std::vector<int64_t> select_layers(const std::string& spec, const std::vector<int64_t>& recurrent);

// Loads a state-set directory and checks it against `model` (architecture, state shape,
// layer indices); a mismatch throws s0::Error saying what differs.
StateSet load_state_set(const std::string& dir, const models::CausalLM& model);
// Loads without a model (no compatibility checks beyond internal consistency).
StateSet load_state_set(const std::string& dir);
// Writes the three files atomically (each file is replaced whole).
void save_state_set(const std::string& dir, const StateSet& set);

}  // namespace s0::adapters
