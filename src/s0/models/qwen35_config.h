#pragma once
// Qwen3.5 text-model configuration: parsed from a Hugging Face config.json (nested under
// `text_config`, or flat), written back as one, and the four real sizes as presets.
// Key names follow config.json exactly. Torch-free.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace s0::models {

struct Qwen35Config {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  std::vector<std::string> layer_types;  // "linear_attention" | "full_attention", per layer
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t linear_num_key_heads = 0;
  int64_t linear_num_value_heads = 0;
  int64_t linear_key_head_dim = 0;
  int64_t linear_value_head_dim = 0;
  int64_t linear_conv_kernel_dim = 4;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e7;
  double partial_rotary_factor = 0.25;
  int64_t max_position_embeddings = 262144;
  bool tie_word_embeddings = true;
  std::vector<int64_t> eos_token_ids;

  bool is_linear(int64_t layer) const { return layer_types.at(layer) == "linear_attention"; }
  int64_t rotary_dim() const { return static_cast<int64_t>(head_dim * partial_rotary_factor); }
  int64_t linear_key_dim() const { return linear_num_key_heads * linear_key_head_dim; }
  int64_t linear_value_dim() const { return linear_num_value_heads * linear_value_head_dim; }
  int64_t conv_dim() const { return 2 * linear_key_dim() + linear_value_dim(); }
  std::vector<int64_t> linear_layers() const;  // indices of GatedDeltaNet layers
  int64_t num_parameters() const;

  // Parse config.json (nested text_config or flat). `source` names the file in errors.
  static Qwen35Config from_json(const nlohmann::json& j, const std::string& source);
  // A nested, Hugging Face style config.json (Qwen3_5ForConditionalGeneration layout).
  nlohmann::json to_json() const;
  // "tiny", "0.8b", "2b", "4b", "9b".
  static Qwen35Config preset(const std::string& name);
  void validate(const std::string& source) const;
};

// Canonical tensor names (prefix stripped, e.g. "layers.0.linear_attn.A_log") and shapes of
// a checkpoint for `cfg`, in checkpoint order. `lm_head.weight` only when untied.
struct TensorShape {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<TensorShape> qwen35_tensor_shapes(const Qwen35Config& cfg);

}  // namespace s0::models
