#pragma once
// Falcon-H1 configuration: parsed from a Hugging Face config.json, written back as one, and
// the real sizes as presets. Key names follow config.json exactly (shared spec
// falcon_h1.md section 1). Every multiplier is read from the config, never assumed.
// Torch-free.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "s0/models/qwen35_config.h"  // TensorShape

namespace s0::models {

struct FalconH1Config {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // config "head_dim", else hidden_size / num_attention_heads
  double rms_norm_eps = 1e-5;
  double rope_theta = 1e11;
  int64_t max_position_embeddings = 8192;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool projectors_bias = false;
  int64_t mamba_d_ssm = 0;     // H * P
  int64_t mamba_n_heads = 0;   // H
  int64_t mamba_d_head = 0;    // P ("auto" -> d_ssm / n_heads)
  int64_t mamba_n_groups = 1;  // G
  int64_t mamba_d_state = 0;   // N
  int64_t mamba_d_conv = 4;    // K
  int64_t mamba_chunk_size = 256;
  bool mamba_conv_bias = true;
  bool mamba_proj_bias = false;
  bool mamba_rms_norm = false;
  bool mamba_norm_before_gate = false;
  double time_step_min_clamp = 0.0;  // time_step_limit[0]
  double time_step_max_clamp = -1;   // time_step_limit[1]; < 0: +inf (no clamp)
  // muP multipliers.
  double embedding_multiplier = 1.0;
  double lm_head_multiplier = 1.0;
  double attention_in_multiplier = 1.0;
  double attention_out_multiplier = 1.0;
  double key_multiplier = 1.0;
  double ssm_in_multiplier = 1.0;
  double ssm_out_multiplier = 1.0;
  std::vector<double> ssm_multipliers{1, 1, 1, 1, 1};  // [z, x, B, C, dt]
  std::vector<double> mlp_multipliers{1, 1};           // [gate (inside SiLU), down]
  bool tie_word_embeddings = false;
  int64_t pad_token_id = 0;
  int64_t bos_token_id = 1;
  std::vector<int64_t> eos_token_ids;

  int64_t conv_dim() const { return mamba_d_ssm + 2 * mamba_n_groups * mamba_d_state; }  // Cdim
  int64_t in_proj_dim() const { return mamba_d_ssm + conv_dim() + mamba_n_heads; }
  int64_t num_parameters() const;

  static FalconH1Config from_json(const nlohmann::json& j, const std::string& source);
  nlohmann::json to_json() const;
  // "tiny", "0.5b", "1.5b", "7b".
  static FalconH1Config preset(const std::string& name);
  void validate(const std::string& source) const;
};

// Canonical tensor names (prefix "model." stripped, e.g. "layers.0.mamba.A_log") and shapes,
// in checkpoint order. `lm_head.weight` only when untied.
std::vector<TensorShape> falcon_h1_tensor_shapes(const FalconH1Config& cfg);

}  // namespace s0::models
