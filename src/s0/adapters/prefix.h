#pragma once
// Prefix tuning (Li & Liang 2021) with Hugging Face PEFT's semantics, the paper's control
// experiment on a pure Transformer (METHOD.md section 3): n learned virtual tokens whose keys
// and values sit at positions 0 .. n-1 of every attention layer's KV cache (adapter door:
// Adapter::prefix_kv). Real tokens start at position n. Works on every model with attention
// layers (the hybrids' attention layers too).
//
// Sizes as PEFT resolves them for GQA models: token_dim = num_key_value_heads * head_dim,
// num_attention_heads = num_key_value_heads, num_layers = every decoder layer. The prompt
// embeddings P [n, num_layers * 2 * token_dim] hold, for virtual token j, the flat index
// ((layer * 2 + kv) * KV + head) * head_dim + d (kv 0 = key, 1 = value); layers without
// attention (a hybrid's recurrent layers) carry entries that are never read.
//
// Parameterisations while training (PEFT's PrefixEncoder names):
//   projection  embedding.weight [n, token_dim] -> transform.0 (Linear token_dim -> E) ->
//               tanh -> transform.2 (Linear E -> width): P = W2 tanh(W1 e + b1) + b2
//   direct      embedding.weight [n, width]: P = embedding
// On disk (PEFT's layout, what PEFT saves after training, inference form):
//   adapter_config.json        {"peft_type": "PREFIX_TUNING", "num_virtual_tokens", "token_dim",
//                               "num_attention_heads", "num_layers", "encoder_hidden_size",
//                               "prefix_projection", ...}
//   adapter_model.safetensors  "prompt_embeddings" [n, width] (float32 here; PEFT's bf16/f16
//                              files are read too)
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "s0/models/model.h"

namespace s0::adapters {

struct PrefixConfig {
  int64_t num_virtual_tokens = 30;  // the paper's setting
  bool prefix_projection = true;    // the paper's setting
  int64_t encoder_hidden_size = 0;  // 0: token_dim (PEFT's default, GQA-adjusted)
  std::string base_model;           // base_model_name_or_path
};

// The model's prefix sizes (PEFT's GQA-adjusted resolution).
struct PrefixShape {
  int64_t num_layers = 0, num_kv_heads = 0, head_dim = 0;
  int64_t token_dim() const { return num_kv_heads * head_dim; }
  int64_t width() const { return num_layers * 2 * token_dim(); }
};
PrefixShape prefix_shape(const models::CausalLM& model);

struct PrefixSet {
  PrefixConfig config;
  PrefixShape shape;
  Tensor prompt_embeddings;                           // [n, width] float32
  nlohmann::json s0_info = nlohmann::json::object();  // training settings (s0.json)

  int64_t num_virtual_tokens() const {
    return prompt_embeddings.defined() ? prompt_embeddings.size(0) : 0;
  }
  int64_t num_params() const { return prompt_embeddings.defined() ? prompt_embeddings.numel() : 0; }
  int64_t num_bytes() const { return num_params() * 4; }
  // What a sequence carries through the adapter door (prefix keys/values for `attention_layers`).
  std::shared_ptr<const models::Adapter> adapter(
      const std::vector<int64_t>& attention_layers) const;
};

// The adapter for prompt embeddings P [n, shape.width()] (any float dtype; autograd flows
// back to P): layer l's keys are P's (2l) block, its values the (2l+1) block, each viewed as
// [KV, n, head_dim].
std::shared_ptr<const models::Adapter> prefix_adapter(const PrefixShape& shape,
                                                      const Tensor& prompt_embeddings,
                                                      const std::vector<int64_t>& attention_layers);

// Training parameters, by PEFT's PrefixEncoder names. init_prefix_params draws PyTorch's
// default initialisation from `seed` (embedding N(0, 1); Linear weights and biases
// U(-1/sqrt(fan_in), 1/sqrt(fan_in))). encode_prefix maps them to P [n, width].
using PrefixParams = std::map<std::string, Tensor>;
PrefixParams init_prefix_params(const PrefixConfig& cfg, const PrefixShape& shape, uint64_t seed);
Tensor encode_prefix(const PrefixConfig& cfg, const PrefixShape& shape, const PrefixParams& params);
// Trainable parameter count of a configuration (what PEFT reports while training).
int64_t prefix_train_params(const PrefixConfig& cfg, const PrefixShape& shape);
// encoder_hidden_size after the default (0 -> token_dim).
int64_t encoder_hidden(const PrefixConfig& cfg, const PrefixShape& shape);

// Checks a set against a model (layers, KV heads, head dim). Throws s0::Error naming both.
void check_prefix(const PrefixSet& set, const models::CausalLM& model, const std::string& where);

void save_prefix(const std::string& dir, const PrefixSet& set);
PrefixSet load_prefix(const std::string& dir);
PrefixSet load_prefix(const std::string& dir, const models::CausalLM& model);
// True when `dir` holds a PEFT prefix-tuning adapter (adapter_config.json peft_type PREFIX_TUNING).
bool is_prefix_dir(const std::string& dir);

}  // namespace s0::adapters
