#pragma once
// S0 state sets: one float32 initial state per tuned recurrent layer, stored in the layout
// that the s0-tuning reference library's S0Trainer.save() writes and its load() accepts
// (a directory):
//   states.safetensors  key = decimal layer index, unscaled float32 [H, K, V] / [H, P, N],
//                       one tensor per recurrent layer of the model (an untuned layer is
//                       stored as zeros, which is exactly "not tuned")
//   config.json         exactly the reference's seven keys, in its order and types:
//                       n_steps (int), lr, l2_lambda (float), alpha (float, or null for the
//                       architecture default), normalize (bool), grad_clip (float),
//                       max_length (int); the reference refuses any other key
//   meta.json           {"arch", "recurrent_layers" (every recurrent layer), "state_shape"}
//   s0.json             s0's own settings (alpha_in_training, layers, seed, num_examples,
//                       final_loss, ...); absent when there are none. Ignored by the reference.
// Reading also accepts s0's older layout (every setting in config.json, only the tuned layers
// stored and listed) and a torch pickle `states.pt` (the reference's fallback when there is
// no states.safetensors). Every loaded tensor must be finite: a NaN or Inf is an error naming
// the file and the tensor. All-zero layers are not kept in memory (a zero state is exactly
// no state).
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
  // Every recurrent layer of the model the set belongs to (meta.json's list; layers without
  // a state are written as zeros). Empty: the layers of `states`.
  std::vector<int64_t> recurrent_layers;
  // The reference's seven keys and s0's own settings together (config.json + s0.json).
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
// Writes the files atomically (each file is replaced whole; a stale s0.json is removed when
// the set has no s0-only settings).
void save_state_set(const std::string& dir, const StateSet& set);

// What `s0 states inspect` prints: dir, arch, state_shape, per layer norm and max |x|,
// alpha, normalize, bytes, config.
nlohmann::json inspect_json(const StateSet& set, const std::string& dir);

// The reference library's config keys, in its order.
const std::vector<std::string>& reference_config_keys();

// The JSON document in `path` (an adapter's config/meta files); s0::Error naming the file when
// it is not valid JSON.
nlohmann::json read_json_file(const std::string& path);

// Throws s0::Error "<what> contains N non-finite values (first: NaN at index i)" unless every
// element of `t` is finite.
void require_finite(const Tensor& t, const std::string& what);

// A safetensors key naming a layer, in the only spelling the reference writes (str(int));
// anything else (" 1", "+1", "01", "x") throws s0::Error naming `file`. State sets and state
// offsets share it.
int64_t parse_layer_key(const std::string& name, const std::string& file);

}  // namespace s0::adapters
