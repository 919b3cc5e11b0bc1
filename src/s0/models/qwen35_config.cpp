#include "s0/models/qwen35_config.h"

#include <nlohmann/json.hpp>

#include "s0/models/config_json.h"
#include "s0/util/error.h"

namespace s0::models {

using nlohmann::json;

std::vector<int64_t> Qwen35Config::linear_layers() const {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < num_hidden_layers; ++i)
    if (is_linear(i)) out.push_back(i);
  return out;
}

Qwen35Config Qwen35Config::from_json(const json& root, const std::string& source) {
  if (!root.is_object()) throw Error(source + ": config must be a JSON object");
  const json& j = root.contains("text_config") && root["text_config"].is_object()
                      ? root["text_config"]
                      : root;
  Qwen35Config c;
  c.vocab_size = config_req<int64_t>(j, "vocab_size", source);
  c.hidden_size = config_req<int64_t>(j, "hidden_size", source);
  c.intermediate_size = config_req<int64_t>(j, "intermediate_size", source);
  c.num_hidden_layers = config_req<int64_t>(j, "num_hidden_layers", source);
  c.num_attention_heads = config_req<int64_t>(j, "num_attention_heads", source);
  c.num_key_value_heads = config_opt<int64_t>(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = config_opt<int64_t>(j, "head_dim", c.hidden_size / std::max<int64_t>(1, c.num_attention_heads), source);
  c.linear_num_key_heads = config_req<int64_t>(j, "linear_num_key_heads", source);
  c.linear_num_value_heads = config_req<int64_t>(j, "linear_num_value_heads", source);
  c.linear_key_head_dim = config_req<int64_t>(j, "linear_key_head_dim", source);
  c.linear_value_head_dim = config_req<int64_t>(j, "linear_value_head_dim", source);
  c.linear_conv_kernel_dim = config_opt<int64_t>(j, "linear_conv_kernel_dim", 4, source);
  c.rms_norm_eps = config_opt<double>(j, "rms_norm_eps", 1e-6, source);
  c.max_position_embeddings = config_opt<int64_t>(j, "max_position_embeddings", 262144, source);
  // Tying: text_config's flag, else the top level's, else true.
  c.tie_word_embeddings = config_opt<bool>(root, "tie_word_embeddings", true, source);
  c.tie_word_embeddings = config_opt<bool>(j, "tie_word_embeddings", c.tie_word_embeddings, source);

  // RoPE: rope_parameters (HF v5) or the older rope_theta / partial_rotary_factor keys.
  c.rope_theta = config_opt<double>(j, "rope_theta", 1e7, source);
  c.partial_rotary_factor = config_opt<double>(j, "partial_rotary_factor", 0.25, source);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const json& rp = j["rope_parameters"];
    std::string type = config_opt<std::string>(rp, "rope_type", "default", source);
    if (type != "default")
      throw Error(source + ": rope_parameters.rope_type '" + type + "' is not supported (only 'default')");
    c.rope_theta = config_opt<double>(rp, "rope_theta", c.rope_theta, source);
    c.partial_rotary_factor = config_opt<double>(rp, "partial_rotary_factor", c.partial_rotary_factor, source);
  }

  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    c.layer_types = config_req<std::vector<std::string>>(j, "layer_types", source);
  } else {
    int64_t interval = config_opt<int64_t>(j, "full_attention_interval", 4, source);
    if (interval <= 0) throw Error(source + ": full_attention_interval must be positive");
    check_config_dim(c.num_hidden_layers, "num_hidden_layers", source, kMaxConfigLayers);
    for (int64_t i = 0; i < c.num_hidden_layers; ++i)
      c.layer_types.push_back((i + 1) % interval == 0 ? "full_attention" : "linear_attention");
  }

  config_eos_ids(j, source, c.eos_token_ids);
  if (c.eos_token_ids.empty()) config_eos_ids(root, source, c.eos_token_ids);
  c.validate(source);
  return c;
}

void Qwen35Config::validate(const std::string& source) const {
  auto pos = [&](int64_t v, const char* key) { check_config_dim(v, key, source); };
  pos(vocab_size, "vocab_size");
  pos(hidden_size, "hidden_size");
  pos(intermediate_size, "intermediate_size");
  pos(num_hidden_layers, "num_hidden_layers");
  pos(num_attention_heads, "num_attention_heads");
  pos(num_key_value_heads, "num_key_value_heads");
  pos(head_dim, "head_dim");
  pos(linear_num_key_heads, "linear_num_key_heads");
  pos(linear_num_value_heads, "linear_num_value_heads");
  pos(linear_key_head_dim, "linear_key_head_dim");
  pos(linear_value_head_dim, "linear_value_head_dim");
  pos(linear_conv_kernel_dim, "linear_conv_kernel_dim");
  check_config_dim(num_hidden_layers, "num_hidden_layers", source, kMaxConfigLayers);
  check_config_finite(rms_norm_eps, "rms_norm_eps", source);
  check_config_finite(rope_theta, "rope_theta", source);
  if (!(partial_rotary_factor >= 0 && partial_rotary_factor <= 1))
    throw Error(source + ": 'partial_rotary_factor' must be in [0, 1]");
  if (static_cast<int64_t>(layer_types.size()) != num_hidden_layers)
    throw Error(source + ": layer_types has " + std::to_string(layer_types.size()) +
                " entries, expected num_hidden_layers = " + std::to_string(num_hidden_layers));
  for (size_t i = 0; i < layer_types.size(); ++i)
    if (layer_types[i] != "linear_attention" && layer_types[i] != "full_attention")
      throw Error(source + ": layer_types[" + std::to_string(i) + "] = '" + layer_types[i] +
                  "', expected 'linear_attention' or 'full_attention'");
  if (num_attention_heads % num_key_value_heads != 0)
    throw Error(source + ": num_attention_heads must be a multiple of num_key_value_heads");
  if (linear_num_value_heads % linear_num_key_heads != 0)
    throw Error(source + ": linear_num_value_heads must be a multiple of linear_num_key_heads");
  int64_t r = rotary_dim();
  if (r < 0 || r > head_dim || r % 2 != 0)
    throw Error(source + ": rotary dim head_dim*partial_rotary_factor = " + std::to_string(r) +
                " must be even and within head_dim");
  check_config_parameters(qwen35_tensor_shapes(*this), source);
}

json Qwen35Config::to_json() const {
  json t;
  t["model_type"] = "qwen3_5_text";
  t["vocab_size"] = vocab_size;
  t["hidden_size"] = hidden_size;
  t["intermediate_size"] = intermediate_size;
  t["num_hidden_layers"] = num_hidden_layers;
  t["layer_types"] = layer_types;
  t["full_attention_interval"] = 4;
  t["num_attention_heads"] = num_attention_heads;
  t["num_key_value_heads"] = num_key_value_heads;
  t["head_dim"] = head_dim;
  t["attention_bias"] = false;
  t["attn_output_gate"] = true;
  t["linear_num_key_heads"] = linear_num_key_heads;
  t["linear_num_value_heads"] = linear_num_value_heads;
  t["linear_key_head_dim"] = linear_key_head_dim;
  t["linear_value_head_dim"] = linear_value_head_dim;
  t["linear_conv_kernel_dim"] = linear_conv_kernel_dim;
  t["hidden_act"] = "silu";
  t["rms_norm_eps"] = rms_norm_eps;
  t["rope_parameters"] = {{"rope_type", "default"},
                          {"rope_theta", rope_theta},
                          {"partial_rotary_factor", partial_rotary_factor}};
  t["partial_rotary_factor"] = partial_rotary_factor;
  t["max_position_embeddings"] = max_position_embeddings;
  t["tie_word_embeddings"] = tie_word_embeddings;
  t["mamba_ssm_dtype"] = "float32";
  if (eos_token_ids.size() == 1)
    t["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty())
    t["eos_token_id"] = eos_token_ids;
  json root;
  root["architectures"] = {"Qwen3_5ForConditionalGeneration"};
  root["model_type"] = "qwen3_5";
  root["tie_word_embeddings"] = tie_word_embeddings;
  root["text_config"] = t;
  return root;
}

Qwen35Config Qwen35Config::preset(const std::string& name) {
  Qwen35Config c;
  c.head_dim = 256;
  c.linear_num_key_heads = 16;
  c.linear_key_head_dim = 128;
  c.linear_value_head_dim = 128;
  c.vocab_size = 248320;
  c.eos_token_ids = {248046, 248044};
  c.max_position_embeddings = 262144;
  if (name == "0.8b") {
    c.hidden_size = 1024, c.intermediate_size = 3584, c.num_hidden_layers = 24;
    c.num_attention_heads = 8, c.num_key_value_heads = 2, c.linear_num_value_heads = 16;
  } else if (name == "2b") {
    c.hidden_size = 2048, c.intermediate_size = 6144, c.num_hidden_layers = 24;
    c.num_attention_heads = 8, c.num_key_value_heads = 2, c.linear_num_value_heads = 16;
  } else if (name == "4b") {
    c.hidden_size = 2560, c.intermediate_size = 9216, c.num_hidden_layers = 32;
    c.num_attention_heads = 16, c.num_key_value_heads = 4, c.linear_num_value_heads = 32;
  } else if (name == "9b") {
    c.hidden_size = 4096, c.intermediate_size = 12288, c.num_hidden_layers = 32;
    c.num_attention_heads = 16, c.num_key_value_heads = 4, c.linear_num_value_heads = 32;
    c.tie_word_embeddings = false;
  } else if (name == "tiny") {
    // Small enough for tests; exercises GQA, grouped value heads (Hv = 2 Hk), head_dim != D/H,
    // partial RoPE and the 3:1 layer pattern.
    c.vocab_size = 512, c.hidden_size = 64, c.intermediate_size = 128, c.num_hidden_layers = 4;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 32;
    c.linear_num_key_heads = 2, c.linear_num_value_heads = 4;
    c.linear_key_head_dim = 16, c.linear_value_head_dim = 16;
    c.eos_token_ids = {258, 256};  // <|im_end|>, <|endoftext|> of the init-model tokenizer
    c.max_position_embeddings = 4096;
  } else {
    throw Error("unknown qwen35 preset '" + name + "' (expected tiny, 0.8b, 2b, 4b or 9b)");
  }
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    c.layer_types.push_back((i + 1) % 4 == 0 ? "full_attention" : "linear_attention");
  c.validate("preset " + name);
  return c;
}

std::vector<TensorShape> qwen35_tensor_shapes(const Qwen35Config& c) {
  const int64_t D = c.hidden_size, I = c.intermediate_size;
  std::vector<TensorShape> out;
  out.push_back({"embed_tokens.weight", {c.vocab_size, D}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    std::string p = "layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {D}});
    if (c.is_linear(l)) {
      std::string a = p + "linear_attn.";
      const int64_t Hv = c.linear_num_value_heads;
      out.push_back({a + "in_proj_qkv.weight", {c.conv_dim(), D}});
      out.push_back({a + "in_proj_z.weight", {c.linear_value_dim(), D}});
      out.push_back({a + "in_proj_b.weight", {Hv, D}});
      out.push_back({a + "in_proj_a.weight", {Hv, D}});
      out.push_back({a + "conv1d.weight", {c.conv_dim(), 1, c.linear_conv_kernel_dim}});
      out.push_back({a + "dt_bias", {Hv}});
      out.push_back({a + "A_log", {Hv}});
      out.push_back({a + "norm.weight", {c.linear_value_head_dim}});
      out.push_back({a + "out_proj.weight", {D, c.linear_value_dim()}});
    } else {
      std::string a = p + "self_attn.";
      const int64_t hd = c.head_dim;
      out.push_back({a + "q_proj.weight", {2 * c.num_attention_heads * hd, D}});
      out.push_back({a + "k_proj.weight", {c.num_key_value_heads * hd, D}});
      out.push_back({a + "v_proj.weight", {c.num_key_value_heads * hd, D}});
      out.push_back({a + "o_proj.weight", {D, c.num_attention_heads * hd}});
      out.push_back({a + "q_norm.weight", {hd}});
      out.push_back({a + "k_norm.weight", {hd}});
    }
    out.push_back({p + "post_attention_layernorm.weight", {D}});
    out.push_back({p + "mlp.gate_proj.weight", {I, D}});
    out.push_back({p + "mlp.up_proj.weight", {I, D}});
    out.push_back({p + "mlp.down_proj.weight", {D, I}});
  }
  out.push_back({"norm.weight", {D}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, D}});
  return out;
}

int64_t Qwen35Config::num_parameters() const {
  return count_parameters(qwen35_tensor_shapes(*this));
}

}  // namespace s0::models
