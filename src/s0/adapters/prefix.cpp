#include "s0/adapters/prefix.h"

#include <cmath>
#include <filesystem>

#include "s0/adapters/state_set.h"
#include "s0/io/atomic_file.h"
#include "s0/io/model_dir.h"
#include "s0/io/safetensors.h"
#include "s0/models/weights.h"
#include "s0/adapters/peft.h"
#include "s0/util/error.h"

namespace s0::adapters {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using peft::kConfig;
using peft::kWeights;
constexpr const char* kKey = "prompt_embeddings";

class PrefixAdapter : public models::Adapter {
 public:
  PrefixAdapter(const PrefixShape& shape, const Tensor& p, const std::vector<int64_t>& layers)
      : n_(p.size(0)) {
    // [n, 2L, KV, hd] -> [2L, KV, n, hd]: layer l's key block 2l, value block 2l + 1.
    Tensor kv = p.view({n_, 2 * shape.num_layers, shape.num_kv_heads, shape.head_dim})
                    .permute({1, 2, 0, 3});
    for (int64_t l : layers) {
      if (l < 0 || l >= shape.num_layers)
        throw Error("prefix: attention layer " + std::to_string(l) + " is beyond the prefix's " +
                    std::to_string(shape.num_layers) + " layers");
      kv_[l] = {kv[2 * l], kv[2 * l + 1]};
    }
  }
  int64_t prefix_length() const override { return n_; }
  std::pair<Tensor, Tensor> prefix_kv(int64_t layer) const override {
    auto it = kv_.find(layer);
    return it == kv_.end() ? std::pair<Tensor, Tensor>{} : it->second;
  }

 private:
  int64_t n_;
  std::map<int64_t, std::pair<Tensor, Tensor>> kv_;
};

}  // namespace

PrefixShape prefix_shape(const models::CausalLM& model) {
  const auto kv = model.kv_shape();
  if (model.attention_layers().empty())
    throw Error("prefix tuning needs attention layers; this " + model.model_type() +
                " model has none");
  return {model.num_layers(), kv.at(0), kv.at(1)};
}

std::shared_ptr<const models::Adapter> prefix_adapter(
    const PrefixShape& shape, const Tensor& p, const std::vector<int64_t>& attention_layers) {
  if (!p.defined() || p.dim() != 2 || p.size(1) != shape.width())
    throw Error("prefix: prompt embeddings must be [n, " + std::to_string(shape.width()) + "]" +
                (p.defined() ? ", found " + io::shape_to_string(p.sizes().vec()) : std::string()));
  return std::make_shared<PrefixAdapter>(shape, p, attention_layers);
}

std::shared_ptr<const models::Adapter> PrefixSet::adapter(
    const std::vector<int64_t>& attention_layers) const {
  return prefix_adapter(shape, prompt_embeddings, attention_layers);
}

int64_t encoder_hidden(const PrefixConfig& cfg, const PrefixShape& shape) {
  return cfg.encoder_hidden_size > 0 ? cfg.encoder_hidden_size : shape.token_dim();
}

int64_t prefix_train_params(const PrefixConfig& cfg, const PrefixShape& s) {
  const int64_t n = cfg.num_virtual_tokens;
  if (!cfg.prefix_projection) return n * s.width();
  const int64_t E = encoder_hidden(cfg, s);
  return n * s.token_dim() + (s.token_dim() * E + E) + (E * s.width() + s.width());
}

PrefixParams init_prefix_params(const PrefixConfig& cfg, const PrefixShape& s, uint64_t seed) {
  if (cfg.num_virtual_tokens <= 0) throw Error("prefix: num_virtual_tokens must be positive");
  if (cfg.encoder_hidden_size < 0) throw Error("prefix: encoder_hidden_size must not be negative");
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const int64_t n = cfg.num_virtual_tokens;
  PrefixParams p;
  if (!cfg.prefix_projection) {
    p["embedding.weight"] = at::empty({n, s.width()}, at::kFloat).normal_(0, 1, gen);
    return p;
  }
  const int64_t td = s.token_dim(), E = encoder_hidden(cfg, s);
  auto uniform = [&](std::vector<int64_t> shape, int64_t fan_in) {
    const double b = 1.0 / std::sqrt(static_cast<double>(fan_in));
    return at::empty(shape, at::kFloat).uniform_(-b, b, gen);
  };
  p["embedding.weight"] = at::empty({n, td}, at::kFloat).normal_(0, 1, gen);
  p["transform.0.weight"] = uniform({E, td}, td);
  p["transform.0.bias"] = uniform({E}, td);
  p["transform.2.weight"] = uniform({s.width(), E}, E);
  p["transform.2.bias"] = uniform({s.width()}, E);
  return p;
}

Tensor encode_prefix(const PrefixConfig& cfg, const PrefixShape& s, const PrefixParams& p) {
  auto get = [&](const char* name) {
    auto it = p.find(name);
    if (it == p.end()) throw Error(std::string("prefix: missing parameter '") + name + "'");
    return it->second;
  };
  if (!cfg.prefix_projection) return get("embedding.weight");
  Tensor h = at::tanh(
      at::linear(get("embedding.weight"), get("transform.0.weight"), get("transform.0.bias")));
  return at::linear(h, get("transform.2.weight"), get("transform.2.bias"));
}

void check_prefix(const PrefixSet& set, const models::CausalLM& model, const std::string& where) {
  const PrefixShape m = prefix_shape(model);
  const PrefixShape& s = set.shape;
  if (s.num_layers != m.num_layers || s.num_kv_heads != m.num_kv_heads || s.head_dim != m.head_dim)
    throw Error(where + ": prefix made for " + std::to_string(s.num_layers) + " layers x " +
                std::to_string(s.num_kv_heads) + " KV heads x head_dim " +
                std::to_string(s.head_dim) + ", but this " + model.model_type() + " model has " +
                std::to_string(m.num_layers) + " x " + std::to_string(m.num_kv_heads) + " x " +
                std::to_string(m.head_dim));
  if (!set.prompt_embeddings.defined() || set.prompt_embeddings.dim() != 2 ||
      set.prompt_embeddings.size(1) != s.width() || set.prompt_embeddings.size(0) <= 0)
    throw Error(where + ": prompt_embeddings must be [n > 0, " + std::to_string(s.width()) + "]");
}

void save_prefix(const std::string& dir, const PrefixSet& set) {
  if (!set.prompt_embeddings.defined() || set.prompt_embeddings.dim() != 2 ||
      set.prompt_embeddings.size(1) != set.shape.width())
    throw Error("save_prefix: prompt embeddings must be [n, " + std::to_string(set.shape.width()) +
                "]");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir + "': " + ec.message());
  Tensor p = set.prompt_embeddings.detach().to(at::kCPU, at::kFloat).contiguous();
  io::save_safetensors(dir + "/" + kWeights,
                       {{io::TensorSpec{kKey, io::DType::F32, p.sizes().vec()}, p.data_ptr()}});
  const PrefixShape& s = set.shape;
  json cfg = {{"peft_type", "PREFIX_TUNING"},
              {"task_type", "CAUSAL_LM"},
              {"num_virtual_tokens", p.size(0)},
              {"token_dim", s.token_dim()},
              {"num_transformer_submodules", 1},
              {"num_attention_heads", s.num_kv_heads},
              {"num_layers", s.num_layers},
              {"encoder_hidden_size", encoder_hidden(set.config, s)},
              {"prefix_projection", set.config.prefix_projection},
              {"inference_mode", true},
              {"base_model_name_or_path", set.config.base_model},
              {"revision", nullptr}};
  io::write_file_atomic(dir + "/" + kConfig, cfg.dump(2));
  if (!set.s0_info.empty()) io::write_file_atomic(dir + "/s0.json", set.s0_info.dump(2));
}

bool is_prefix_dir(const std::string& dir) {
  const std::string path = dir + "/" + kConfig;
  if (!fs::exists(path)) return false;
  try {
    json j = json::parse(io::read_file(path));
    return j.is_object() && j.value("peft_type", std::string()) == "PREFIX_TUNING";
  } catch (const std::exception&) {
    return false;
  }
}

PrefixSet load_prefix(const std::string& dir) {
  const std::string cfg_path = dir + "/" + kConfig, st_path = dir + "/" + kWeights;
  if (!fs::is_directory(dir))
    throw FileNotFound("prefix adapter directory '" + dir + "' does not exist");
  if (!fs::exists(cfg_path))
    throw Error(dir + ": no " + kConfig + " (not a PEFT adapter directory)");
  if (!fs::exists(st_path)) throw Error(dir + ": no " + kWeights);
  json j = read_json_file(cfg_path);
  if (!j.is_object()) throw Error(cfg_path + ": must be a JSON object");
  const std::string type = j.contains("peft_type") && j["peft_type"].is_string()
                               ? j["peft_type"].get<std::string>()
                               : "";
  if (type != "PREFIX_TUNING")
    throw Error(cfg_path + ": peft_type is '" + type + "', expected PREFIX_TUNING");
  auto int_key = [&](const char* k) -> int64_t {
    if (!j.contains(k) || !j[k].is_number_integer() || j[k].get<int64_t>() <= 0 ||
        j[k].get<int64_t>() > (1 << 24))
      throw Error(cfg_path + ": '" + k + "' must be a positive integer");
    return j[k].get<int64_t>();
  };
  if (j.contains("num_transformer_submodules") &&
      j["num_transformer_submodules"].is_number_integer() &&
      j["num_transformer_submodules"].get<int64_t>() != 1)
    throw Error(cfg_path + ": num_transformer_submodules must be 1 (a decoder-only model)");
  PrefixSet set;
  const int64_t n = int_key("num_virtual_tokens"), td = int_key("token_dim");
  set.shape.num_layers = int_key("num_layers");
  set.shape.num_kv_heads = int_key("num_attention_heads");
  if (td % set.shape.num_kv_heads != 0)
    throw Error(cfg_path + ": token_dim " + std::to_string(td) +
                " is not a multiple of num_attention_heads");
  set.shape.head_dim = td / set.shape.num_kv_heads;
  set.config.num_virtual_tokens = n;
  if (j.contains("prefix_projection") && !j["prefix_projection"].is_boolean() && !j["prefix_projection"].is_null())
    throw Error(cfg_path + ": 'prefix_projection' must be true or false, found " + j["prefix_projection"].dump());
  set.config.prefix_projection = j.contains("prefix_projection") && j["prefix_projection"].is_boolean() &&
                                 j["prefix_projection"].get<bool>();
  if (j.contains("encoder_hidden_size") && j["encoder_hidden_size"].is_number_integer())
    set.config.encoder_hidden_size = j["encoder_hidden_size"].get<int64_t>();
  if (j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string())
    set.config.base_model = j["base_model_name_or_path"].get<std::string>();
  if (fs::exists(dir + "/s0.json")) set.s0_info = read_json_file(dir + "/s0.json");

  io::SafetensorsFile f(st_path);
  if (!f.has(kKey))
    throw Error(st_path + ": no '" + std::string(kKey) +
                "' tensor (an adapter saved in PEFT's training form? only the saved inference form "
                "is read)");
  const auto& t = f.get(kKey);
  if (t.dtype != io::DType::F32 && t.dtype != io::DType::BF16 && t.dtype != io::DType::F16)
    throw Error(st_path + ": '" + std::string(kKey) + "' has dtype " + io::dtype_name(t.dtype) +
                " (expected F32, BF16 or F16)");
  const std::vector<int64_t> want{n, set.shape.width()};
  if (t.shape != want)
    throw Error(st_path + ": '" + std::string(kKey) + "' has shape " +
                io::shape_to_string(t.shape) + ", expected " + io::shape_to_string(want) +
                " from " + kConfig);
  set.prompt_embeddings = models::tensor_view(t).to(at::kFloat, false, true);
  require_finite(set.prompt_embeddings, st_path + ": '" + std::string(kKey) + "'");
  return set;
}

PrefixSet load_prefix(const std::string& dir, const models::CausalLM& model) {
  PrefixSet set = load_prefix(dir);
  check_prefix(set, model, dir);
  return set;
}

}  // namespace s0::adapters
