#include "s0/models/falcon_h1_config.h"

#include <cmath>

#include <nlohmann/json.hpp>

#include "s0/models/config_json.h"
#include "s0/util/error.h"

namespace s0::models {

using nlohmann::json;

namespace {

std::vector<double> get_vec(const json& j, const char* key, std::vector<double> dflt, size_t n,
                            const std::string& source) {
  auto v = config_opt<std::vector<double>>(j, key, dflt, source);
  if (v.size() != n)
    throw Error(source + ": '" + key + "' must have " + std::to_string(n) + " entries, found " +
                std::to_string(v.size()));
  return v;
}

}  // namespace

FalconH1Config FalconH1Config::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": config must be a JSON object");
  FalconH1Config c;
  c.vocab_size = config_req<int64_t>(j, "vocab_size", source);
  c.hidden_size = config_req<int64_t>(j, "hidden_size", source);
  c.intermediate_size = config_req<int64_t>(j, "intermediate_size", source);
  c.num_hidden_layers = config_req<int64_t>(j, "num_hidden_layers", source);
  c.num_attention_heads = config_req<int64_t>(j, "num_attention_heads", source);
  c.num_key_value_heads = config_opt<int64_t>(j, "num_key_value_heads", c.num_attention_heads, source);
  c.head_dim = config_opt<int64_t>(j, "head_dim", c.hidden_size / std::max<int64_t>(1, c.num_attention_heads), source);
  c.rms_norm_eps = config_opt<double>(j, "rms_norm_eps", 1e-5, source);
  c.max_position_embeddings = config_opt<int64_t>(j, "max_position_embeddings", 8192, source);
  c.attention_bias = config_opt<bool>(j, "attention_bias", false, source);
  c.mlp_bias = config_opt<bool>(j, "mlp_bias", false, source);
  c.projectors_bias = config_opt<bool>(j, "projectors_bias", false, source);

  c.rope_theta = config_rope_theta(j, 1e11, source);  // plain RoPE only

  // Mamba-2 branch. d_ssm null -> expand * hidden; d_head "auto" -> d_ssm / n_heads.
  c.mamba_n_heads = config_req<int64_t>(j, "mamba_n_heads", source);
  const int64_t expand = config_opt<int64_t>(j, "mamba_expand", 2, source);
  int64_t d_ssm = 0;
  if (__builtin_mul_overflow(expand, c.hidden_size, &d_ssm))
    throw Error(source + ": mamba_expand * hidden_size overflows");
  c.mamba_d_ssm = config_opt<int64_t>(j, "mamba_d_ssm", d_ssm, source);
  auto dh = j.find("mamba_d_head");
  if (dh == j.end() || dh->is_null() || (dh->is_string() && dh->get<std::string>() == "auto"))
    c.mamba_d_head = c.mamba_d_ssm / std::max<int64_t>(1, c.mamba_n_heads);
  else if (dh->is_number_integer())
    c.mamba_d_head = dh->get<int64_t>();
  else
    throw Error(source + ": 'mamba_d_head' must be an integer or \"auto\", found " + dh->dump());
  c.mamba_n_groups = config_opt<int64_t>(j, "mamba_n_groups", 1, source);
  c.mamba_d_state = config_req<int64_t>(j, "mamba_d_state", source);
  c.mamba_d_conv = config_opt<int64_t>(j, "mamba_d_conv", 4, source);
  c.mamba_chunk_size = config_opt<int64_t>(j, "mamba_chunk_size", 256, source);
  c.mamba_conv_bias = config_opt<bool>(j, "mamba_conv_bias", true, source);
  c.mamba_proj_bias = config_opt<bool>(j, "mamba_proj_bias", false, source);
  c.mamba_rms_norm = config_opt<bool>(j, "mamba_rms_norm", false, source);
  c.mamba_norm_before_gate = config_opt<bool>(j, "mamba_norm_before_gate", true, source);
  if (j.contains("time_step_limit") && !j["time_step_limit"].is_null()) {
    const json& tl = j["time_step_limit"];
    if (!tl.is_array() || tl.size() != 2 || !tl[0].is_number())
      throw Error(source + ": 'time_step_limit' must be [min, max], found " + tl.dump());
    c.time_step_min_clamp = tl[0].get<double>();
    // JSON has no infinity: null, a string "inf" or a huge number all mean no upper clamp.
    if (tl[1].is_number() && std::isfinite(tl[1].get<double>()) && tl[1].get<double>() < 1e30)
      c.time_step_max_clamp = tl[1].get<double>();
  }

  c.embedding_multiplier = config_opt<double>(j, "embedding_multiplier", 1.0, source);
  c.lm_head_multiplier = config_opt<double>(j, "lm_head_multiplier", 1.0, source);
  c.attention_in_multiplier = config_opt<double>(j, "attention_in_multiplier", 1.0, source);
  c.attention_out_multiplier = config_opt<double>(j, "attention_out_multiplier", 1.0, source);
  c.key_multiplier = config_opt<double>(j, "key_multiplier", 1.0, source);
  c.ssm_in_multiplier = config_opt<double>(j, "ssm_in_multiplier", 1.0, source);
  c.ssm_out_multiplier = config_opt<double>(j, "ssm_out_multiplier", 1.0, source);
  c.ssm_multipliers = get_vec(j, "ssm_multipliers", {1, 1, 1, 1, 1}, 5, source);
  c.mlp_multipliers = get_vec(j, "mlp_multipliers", {1, 1}, 2, source);
  c.tie_word_embeddings = config_opt<bool>(j, "tie_word_embeddings", false, source);
  c.pad_token_id = config_opt<int64_t>(j, "pad_token_id", 0, source);
  c.bos_token_id = config_opt<int64_t>(j, "bos_token_id", 1, source);
  config_eos_ids(j, source, c.eos_token_ids);
  c.validate(source);
  return c;
}

void FalconH1Config::validate(const std::string& source) const {
  auto pos = [&](int64_t v, const char* key) { check_config_dim(v, key, source); };
  pos(vocab_size, "vocab_size");
  pos(hidden_size, "hidden_size");
  pos(intermediate_size, "intermediate_size");
  pos(num_hidden_layers, "num_hidden_layers");
  pos(num_attention_heads, "num_attention_heads");
  pos(num_key_value_heads, "num_key_value_heads");
  pos(head_dim, "head_dim");
  pos(mamba_d_ssm, "mamba_d_ssm");
  pos(mamba_n_heads, "mamba_n_heads");
  pos(mamba_d_head, "mamba_d_head");
  pos(mamba_n_groups, "mamba_n_groups");
  pos(mamba_d_state, "mamba_d_state");
  pos(mamba_d_conv, "mamba_d_conv");
  pos(mamba_chunk_size, "mamba_chunk_size");
  check_config_dim(num_hidden_layers, "num_hidden_layers", source, kMaxConfigLayers);
  for (double v : {rms_norm_eps, rope_theta, time_step_min_clamp, time_step_max_clamp, embedding_multiplier,
                   lm_head_multiplier, attention_in_multiplier, attention_out_multiplier, key_multiplier,
                   ssm_in_multiplier, ssm_out_multiplier})
    check_config_finite(v, "a number (eps, rope_theta, time_step_limit or a multiplier)", source);
  for (double v : ssm_multipliers) check_config_finite(v, "ssm_multipliers", source);
  for (double v : mlp_multipliers) check_config_finite(v, "mlp_multipliers", source);
  if (num_attention_heads % num_key_value_heads != 0)
    throw Error(source + ": num_attention_heads must be a multiple of num_key_value_heads");
  if (head_dim % 2 != 0) throw Error(source + ": 'head_dim' must be even (RoPE)");
  if (mamba_n_heads * mamba_d_head != mamba_d_ssm)
    throw Error(source + ": mamba_n_heads * mamba_d_head = " + std::to_string(mamba_n_heads * mamba_d_head) +
                " must equal mamba_d_ssm = " + std::to_string(mamba_d_ssm));
  if (mamba_n_heads % mamba_n_groups != 0)
    throw Error(source + ": mamba_n_heads must be a multiple of mamba_n_groups");
  if (mamba_d_ssm % mamba_n_groups != 0)
    throw Error(source + ": mamba_d_ssm must be a multiple of mamba_n_groups");
  check_config_parameters(falcon_h1_tensor_shapes(*this), source);
}

json FalconH1Config::to_json() const {
  json t;
  t["architectures"] = {"FalconH1ForCausalLM"};
  t["model_type"] = "falcon_h1";
  t["vocab_size"] = vocab_size;
  t["hidden_size"] = hidden_size;
  t["intermediate_size"] = intermediate_size;
  t["num_hidden_layers"] = num_hidden_layers;
  t["num_attention_heads"] = num_attention_heads;
  t["num_key_value_heads"] = num_key_value_heads;
  t["head_dim"] = head_dim;
  t["hidden_act"] = "silu";
  t["rms_norm_eps"] = rms_norm_eps;
  t["rope_theta"] = rope_theta;
  t["rope_scaling"] = nullptr;
  t["max_position_embeddings"] = max_position_embeddings;
  t["attention_bias"] = attention_bias;
  t["attention_dropout"] = 0.0;
  t["mlp_bias"] = mlp_bias;
  t["projectors_bias"] = projectors_bias;
  t["mamba_d_ssm"] = mamba_d_ssm;
  t["mamba_n_heads"] = mamba_n_heads;
  t["mamba_d_head"] = mamba_d_head;
  t["mamba_n_groups"] = mamba_n_groups;
  t["mamba_d_state"] = mamba_d_state;
  t["mamba_d_conv"] = mamba_d_conv;
  t["mamba_expand"] = 2;
  t["mamba_chunk_size"] = mamba_chunk_size;
  t["mamba_conv_bias"] = mamba_conv_bias;
  t["mamba_proj_bias"] = mamba_proj_bias;
  t["mamba_rms_norm"] = mamba_rms_norm;
  t["mamba_norm_before_gate"] = mamba_norm_before_gate;
  t["time_step_min"] = 0.001;
  t["time_step_max"] = 0.1;
  t["embedding_multiplier"] = embedding_multiplier;
  t["lm_head_multiplier"] = lm_head_multiplier;
  t["attention_in_multiplier"] = attention_in_multiplier;
  t["attention_out_multiplier"] = attention_out_multiplier;
  t["key_multiplier"] = key_multiplier;
  t["ssm_in_multiplier"] = ssm_in_multiplier;
  t["ssm_out_multiplier"] = ssm_out_multiplier;
  t["ssm_multipliers"] = ssm_multipliers;
  t["mlp_multipliers"] = mlp_multipliers;
  t["tie_word_embeddings"] = tie_word_embeddings;
  t["pad_token_id"] = pad_token_id;
  t["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1)
    t["eos_token_id"] = eos_token_ids[0];
  else if (!eos_token_ids.empty())
    t["eos_token_id"] = eos_token_ids;
  return t;
}

FalconH1Config FalconH1Config::preset(const std::string& name) {
  FalconH1Config c;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 1e11;
  c.mamba_n_groups = 1;
  c.mamba_d_conv = 4;
  c.mamba_chunk_size = 128;
  c.mamba_rms_norm = false;
  c.mamba_norm_before_gate = false;
  c.bos_token_id = 1;
  c.pad_token_id = 0;
  c.eos_token_ids = {11};
  // Multipliers of Falcon-H1-0.5B (shared spec 1.3). The other sizes' values are not known
  // (UNVERIFIED): their presets reuse these; a real checkpoint's config.json carries its own.
  c.embedding_multiplier = 5.656854249492381;
  c.lm_head_multiplier = 0.0390625;
  c.attention_in_multiplier = 1.0;
  c.attention_out_multiplier = 0.9375;
  c.key_multiplier = 0.39062499999999994;
  c.ssm_in_multiplier = 1.25;
  c.ssm_out_multiplier = 0.23570226039551587;
  c.ssm_multipliers = {0.3535533905932738, 0.25, 0.3535533905932738, 0.5, 0.3535533905932738};
  c.mlp_multipliers = {0.8838834764831844, 0.5859375};
  if (name == "0.5b") {
    c.hidden_size = 1024, c.intermediate_size = 2048, c.num_hidden_layers = 36;
    c.num_attention_heads = 8, c.num_key_value_heads = 2, c.head_dim = 64;
    c.vocab_size = 32784, c.max_position_embeddings = 16384;
    c.mamba_d_ssm = 1536, c.mamba_n_heads = 24, c.mamba_d_head = 64, c.mamba_d_state = 128;
  } else if (name == "1.5b") {
    c.hidden_size = 2048, c.intermediate_size = 4608, c.num_hidden_layers = 24;
    c.num_attention_heads = 8, c.num_key_value_heads = 2, c.head_dim = 128;
    c.vocab_size = 65537, c.max_position_embeddings = 131072;
    c.mamba_d_ssm = 3072, c.mamba_n_heads = 48, c.mamba_d_head = 64, c.mamba_d_state = 256;
  } else if (name == "7b") {
    c.hidden_size = 3072, c.intermediate_size = 12288, c.num_hidden_layers = 44;
    c.num_attention_heads = 12, c.num_key_value_heads = 2, c.head_dim = 128;
    c.vocab_size = 130048, c.max_position_embeddings = 262144;
    c.mamba_d_ssm = 3072, c.mamba_n_heads = 24, c.mamba_d_head = 128, c.mamba_d_state = 256;
  } else if (name == "tiny") {
    // Small enough for tests; exercises GQA, head_dim != hidden/heads, two B/C groups,
    // chunk boundaries (chunk 32) and every multiplier at a distinct non-trivial value.
    c.hidden_size = 64, c.intermediate_size = 96, c.num_hidden_layers = 3;
    c.num_attention_heads = 4, c.num_key_value_heads = 2, c.head_dim = 24;
    c.vocab_size = 512, c.max_position_embeddings = 4096;
    c.mamba_d_ssm = 64, c.mamba_n_heads = 4, c.mamba_d_head = 16, c.mamba_n_groups = 2;
    c.mamba_d_state = 8, c.mamba_chunk_size = 32;
    c.rope_theta = 1e4;
    c.embedding_multiplier = 3.7, c.lm_head_multiplier = 0.31;
    c.attention_in_multiplier = 1.3, c.attention_out_multiplier = 0.8, c.key_multiplier = 0.45;
    c.ssm_in_multiplier = 1.15, c.ssm_out_multiplier = 0.6;
    c.ssm_multipliers = {0.7, 1.4, 0.55, 1.8, 0.9};
    c.mlp_multipliers = {1.25, 0.65};
    c.eos_token_ids = {11, 13};  // <|end_of_text|>, <|im_end|> of the init-model tokenizer
  } else {
    throw Error("unknown falcon_h1 preset '" + name + "' (expected tiny, 0.5b, 1.5b or 7b)");
  }
  c.validate("preset " + name);
  return c;
}

std::vector<TensorShape> falcon_h1_tensor_shapes(const FalconH1Config& c) {
  const int64_t D = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  std::vector<TensorShape> out;
  out.push_back({"embed_tokens.weight", {c.vocab_size, D}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {D}});
    const std::string a = p + "self_attn.";
    for (const char* n : {"q", "k", "v"}) {
      const int64_t rows = (n[0] == 'q' ? c.num_attention_heads : c.num_key_value_heads) * hd;
      out.push_back({a + n + "_proj.weight", {rows, D}});
      if (c.attention_bias) out.push_back({a + n + "_proj.bias", {rows}});
    }
    out.push_back({a + "o_proj.weight", {D, c.num_attention_heads * hd}});
    if (c.attention_bias) out.push_back({a + "o_proj.bias", {D}});
    const std::string m = p + "mamba.";
    out.push_back({m + "in_proj.weight", {c.in_proj_dim(), D}});
    if (c.mamba_proj_bias) out.push_back({m + "in_proj.bias", {c.in_proj_dim()}});
    out.push_back({m + "conv1d.weight", {c.conv_dim(), 1, c.mamba_d_conv}});
    if (c.mamba_conv_bias) out.push_back({m + "conv1d.bias", {c.conv_dim()}});
    out.push_back({m + "dt_bias", {c.mamba_n_heads}});
    out.push_back({m + "A_log", {c.mamba_n_heads}});
    out.push_back({m + "D", {c.mamba_n_heads}});
    if (c.mamba_rms_norm) out.push_back({m + "norm.weight", {c.mamba_d_ssm}});
    out.push_back({m + "out_proj.weight", {D, c.mamba_d_ssm}});
    if (c.projectors_bias) out.push_back({m + "out_proj.bias", {D}});
    out.push_back({p + "pre_ff_layernorm.weight", {D}});
    const std::string f = p + "feed_forward.";
    out.push_back({f + "gate_proj.weight", {I, D}});
    if (c.mlp_bias) out.push_back({f + "gate_proj.bias", {I}});
    out.push_back({f + "up_proj.weight", {I, D}});
    if (c.mlp_bias) out.push_back({f + "up_proj.bias", {I}});
    out.push_back({f + "down_proj.weight", {D, I}});
    if (c.mlp_bias) out.push_back({f + "down_proj.bias", {D}});
  }
  out.push_back({"final_layernorm.weight", {D}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, D}});
  return out;
}

int64_t FalconH1Config::num_parameters() const {
  return count_parameters(falcon_h1_tensor_shapes(*this));
}

}  // namespace s0::models
