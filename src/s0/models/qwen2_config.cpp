#include "s0/models/qwen2_config.h"

#include <nlohmann/json.hpp>

#include "s0/models/config_json.h"
#include "s0/util/error.h"

namespace s0::models {

using nlohmann::json;

Qwen2Config Qwen2Config::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config must be a JSON object");
  Qwen2Config c;
  c.vocab_size = config_req<int64_t>(j, "vocab_size", source);
  c.hidden_size = config_req<int64_t>(j, "hidden_size", source);
  c.intermediate_size = config_req<int64_t>(j, "intermediate_size", source);
  c.num_hidden_layers = config_req<int64_t>(j, "num_hidden_layers", source);
  c.num_attention_heads = config_req<int64_t>(j, "num_attention_heads", source);
  c.num_key_value_heads =
      config_opt<int64_t>(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = config_opt<int64_t>(
      j, "head_dim", c.hidden_size / std::max<int64_t>(1, c.num_attention_heads), source);
  c.rms_norm_eps = config_opt<double>(j, "rms_norm_eps", 1e-6, source);
  c.max_position_embeddings = config_opt<int64_t>(j, "max_position_embeddings", 32768, source);
  c.tie_word_embeddings = config_opt<bool>(j, "tie_word_embeddings", false, source);
  c.bos_token_id = config_opt<int64_t>(j, "bos_token_id", -1, source);
  config_eos_ids(j, source, c.eos_token_ids);

  const std::string act = config_opt<std::string>(j, "hidden_act", "silu", source);
  if (act != "silu")
    throw Error(source + ": hidden_act '" + act + "' is not supported (only 'silu')");
  // Sliding-window attention is read and refused when enabled (every released Qwen2.5 has it off).
  if (config_opt<bool>(j, "use_sliding_window", false, source))
    throw Error(source +
                ": use_sliding_window is true; sliding-window attention is not supported "
                "(set it to false to run every layer with full attention)");
  if (j.contains("layer_types") && !j["layer_types"].is_null())
    for (const auto& t : config_req<std::vector<std::string>>(j, "layer_types", source))
      if (t != "full_attention")
        throw Error(source + ": layer_types holds '" + t +
                    "'; only 'full_attention' layers are supported");

  c.rope_theta = config_rope_theta(j, 10000.0, source);  // plain RoPE only
  c.validate(source);
  return c;
}

void Qwen2Config::validate(const std::string& source) const {
  auto pos = [&](int64_t v, const char* key) { check_config_dim(v, key, source); };
  pos(vocab_size, "vocab_size");
  pos(hidden_size, "hidden_size");
  pos(intermediate_size, "intermediate_size");
  pos(num_attention_heads, "num_attention_heads");
  pos(num_key_value_heads, "num_key_value_heads");
  pos(head_dim, "head_dim");
  check_config_dim(num_hidden_layers, "num_hidden_layers", source, kMaxConfigLayers);
  check_config_finite(rms_norm_eps, "rms_norm_eps", source);
  check_config_finite(rope_theta, "rope_theta", source);
  if (!(rope_theta > 0)) throw Error(source + ": 'rope_theta' must be positive");
  if (head_dim % 2 != 0) throw Error(source + ": head_dim must be even (RoPE rotates pairs)");
  if (num_attention_heads % num_key_value_heads != 0)
    throw Error(source + ": num_attention_heads must be a multiple of num_key_value_heads");
  check_config_parameters(qwen2_tensor_shapes(*this), source);
}

json Qwen2Config::to_json() const {
  json t;
  t["architectures"] = {"Qwen2ForCausalLM"};
  t["model_type"] = "qwen2";
  t["vocab_size"] = vocab_size;
  t["hidden_size"] = hidden_size;
  t["intermediate_size"] = intermediate_size;
  t["num_hidden_layers"] = num_hidden_layers;
  t["num_attention_heads"] = num_attention_heads;
  t["num_key_value_heads"] = num_key_value_heads;
  if (head_dim * num_attention_heads != hidden_size) t["head_dim"] = head_dim;
  t["hidden_act"] = "silu";
  t["rms_norm_eps"] = rms_norm_eps;
  t["rope_theta"] = rope_theta;
  t["rope_scaling"] = nullptr;
  t["max_position_embeddings"] = max_position_embeddings;
  t["use_sliding_window"] = false;
  t["sliding_window"] = max_position_embeddings;
  t["max_window_layers"] = num_hidden_layers;
  t["attention_dropout"] = 0.0;
  t["tie_word_embeddings"] = tie_word_embeddings;
  if (bos_token_id >= 0) t["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1)
    t["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty())
    t["eos_token_id"] = eos_token_ids;
  t["use_cache"] = true;
  return t;
}

Qwen2Config Qwen2Config::preset(const std::string& name) {
  Qwen2Config c;
  c.vocab_size = 151936;
  c.rope_theta = 1e6;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 32768;
  c.tie_word_embeddings = true;
  c.bos_token_id = 151643;
  c.eos_token_ids = {151645};
  if (name == "0.5b") {
    c.hidden_size = 896, c.intermediate_size = 4864, c.num_hidden_layers = 24;
    c.num_attention_heads = 14, c.num_key_value_heads = 2;
  } else if (name == "1.5b") {
    c.hidden_size = 1536, c.intermediate_size = 8960, c.num_hidden_layers = 28;
    c.num_attention_heads = 12, c.num_key_value_heads = 2;
  } else if (name == "3b") {
    c.hidden_size = 2048, c.intermediate_size = 11008, c.num_hidden_layers = 36;
    c.num_attention_heads = 16, c.num_key_value_heads = 2;
  } else if (name == "7b") {
    c.hidden_size = 3584, c.intermediate_size = 18944, c.num_hidden_layers = 28;
    c.num_attention_heads = 28, c.num_key_value_heads = 4;
    c.vocab_size = 152064, c.tie_word_embeddings = false;
  } else if (name == "tiny") {
    // Small enough for tests; GQA (2 query heads per KV head), biases, tied embeddings.
    c.vocab_size = 512, c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 3;
    c.num_attention_heads = 4, c.num_key_value_heads = 2;
    c.bos_token_id = 256,
    c.eos_token_ids = {258, 256};  // <|im_end|>, <|endoftext|> of the init-model tokenizer
    c.max_position_embeddings = 4096;
  } else {
    throw Error("unknown qwen2 preset '" + name + "' (expected tiny, 0.5b, 1.5b, 3b or 7b)");
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.validate("preset " + name);
  return c;
}

std::vector<TensorShape> qwen2_tensor_shapes(const Qwen2Config& c) {
  const int64_t D = c.hidden_size, I = c.intermediate_size;
  const int64_t qd = c.num_attention_heads * c.head_dim, kvd = c.num_key_value_heads * c.head_dim;
  std::vector<TensorShape> out;
  out.push_back({"embed_tokens.weight", {c.vocab_size, D}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {D}});
    out.push_back({p + "self_attn.q_proj.weight", {qd, D}});
    out.push_back({p + "self_attn.q_proj.bias", {qd}});
    out.push_back({p + "self_attn.k_proj.weight", {kvd, D}});
    out.push_back({p + "self_attn.k_proj.bias", {kvd}});
    out.push_back({p + "self_attn.v_proj.weight", {kvd, D}});
    out.push_back({p + "self_attn.v_proj.bias", {kvd}});
    out.push_back({p + "self_attn.o_proj.weight", {D, qd}});
    out.push_back({p + "post_attention_layernorm.weight", {D}});
    out.push_back({p + "mlp.gate_proj.weight", {I, D}});
    out.push_back({p + "mlp.up_proj.weight", {I, D}});
    out.push_back({p + "mlp.down_proj.weight", {D, I}});
  }
  out.push_back({"norm.weight", {D}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, D}});
  return out;
}

int64_t Qwen2Config::num_parameters() const {
  return count_parameters(qwen2_tensor_shapes(*this));
}

}  // namespace s0::models
