#pragma once
// Qwen2 / Qwen2.5 configuration (model_type "qwen2"): parsed from a Hugging Face config.json,
// written back as one, and the real sizes as presets. Key names follow config.json exactly
// (shared spec qwen2.md section 1). The pure-Transformer control of the paper's prefix-tuning
// experiment. Torch-free.
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "s0/models/qwen35_config.h"  // TensorShape

namespace s0::models {

struct Qwen2Config {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // config "head_dim", else hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  int64_t max_position_embeddings = 32768;
  bool tie_word_embeddings = false;  // HF Qwen2Config's default
  int64_t bos_token_id = -1;         // -1: none in the config
  std::vector<int64_t> eos_token_ids;

  int64_t num_parameters() const;

  // Parse config.json. Refused with a message naming the key: use_sliding_window true,
  // rope_scaling / a rope type other than "default", hidden_act other than silu, layer_types
  // other than full attention. `source` names the file in errors.
  static Qwen2Config from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;  // Qwen2ForCausalLM config.json
  // "tiny" (tests), "0.5b", "1.5b", "3b", "7b" (the Qwen2.5 shapes).
  static Qwen2Config preset(const std::string& name);
  void validate(const std::string& source) const;
};

// Canonical tensor names (without "model.", e.g. "layers.0.self_attn.q_proj.bias") and shapes,
// in checkpoint order; lm_head.weight only when untied.
std::vector<TensorShape> qwen2_tensor_shapes(const Qwen2Config& cfg);

}  // namespace s0::models
