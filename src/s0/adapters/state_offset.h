#pragma once
// State-offset tuning (Kang et al. 2025, "State-offset Tuning", extended to GatedDeltaNet as
// in METHOD.md section 3): one learned tensor D per recurrent layer, of the state's shape,
// added to the state the layer reads its output from at every step, the recurrence itself
// unchanged:
//   GatedDeltaNet  o_t = (S_t + D)^T q_t   (an extra D^T q_t; q as the recurrence reads it:
//                                            L2-normalised and scaled by dk^-1/2)
//   Mamba-2        y_t = C_t (h_t + D)      (an extra D C_t per head; before the D skip)
// Unlike S0 this costs work at every generated token (one [K] x [K, V] product per head).
// On disk like a state set, with its own tag (a directory):
//   offsets.safetensors  key = decimal layer index, float32 [H, K, V] / [H, P, N]
//   meta.json            {"kind": "state_offset", "arch", "recurrent_layers", "state_shape"}
//   config.json          training settings ("scale": multiplier at inference, default 1)
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/models/model.h"

namespace s0::adapters {

struct OffsetSet {
  std::string arch;                  // "gated_delta_net" | "mamba2"
  std::vector<int64_t> state_shape;  // per layer
  models::StateMap offsets;          // float32
  nlohmann::json config = nlohmann::json::object();

  double scale() const;  // config "scale" (default 1)
  std::shared_ptr<const models::Adapter> adapter(std::optional<double> scale_override = std::nullopt) const;
  int64_t num_params() const;
  int64_t num_bytes() const { return num_params() * 4; }
};

// The readout hook of a state offset, for adapters built around other tensors (training
// hands it autograd leaves). offsets: layer -> D in the state's shape.
std::shared_ptr<const models::Adapter> offset_adapter(const std::string& arch, models::StateMap offsets);

OffsetSet load_offset_set(const std::string& dir);
OffsetSet load_offset_set(const std::string& dir, const models::CausalLM& model);
void save_offset_set(const std::string& dir, const OffsetSet& set);
// True when `dir` holds a state offset (meta.json kind "state_offset").
bool is_offset_dir(const std::string& dir);

}  // namespace s0::adapters
