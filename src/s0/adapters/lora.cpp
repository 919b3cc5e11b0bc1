#include "s0/adapters/lora.h"

#include "s0/adapters/state_set.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <set>

#include "s0/io/atomic_file.h"
#include "s0/io/model_dir.h"
#include "s0/io/safetensors.h"
#include "s0/nn/linear.h"
#include "s0/models/weights.h"
#include "s0/adapters/peft.h"
#include "s0/util/error.h"

namespace s0::adapters {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using peft::kConfig;
using peft::kWeights;
constexpr const char* kPeftPrefix = "base_model.model.";

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// PEFT's matching: a list entry matches the full name or a "."-separated suffix of it.
bool matches(const std::string& module, const std::string& target) {
  return module == target || ends_with(module, "." + target);
}

// The LoRA delta on one layer's output: y + scale * (x A^T) B^T, in float32. Inference (no
// autograd, CPU, float32 factors) computes both products with nn::gemv_rows, whose every row
// is bitwise the same whatever the number of rows: the engine hands this hook all the rows of
// a batch that carry this adapter at once (one pass over A and B for the group) and each
// request still gets exactly the tokens it gets alone. Training takes at::matmul (autograd).
class LoraAdapter : public models::Adapter {
 public:
  LoraAdapter(std::map<std::string, LoraFactors> m, double scale) : modules_(std::move(m)), scale_(scale) {}
  bool has_linear_hook() const override { return true; }
  Tensor linear_output(const std::string& name, const Tensor& x, const Tensor& y) const override {
    auto it = modules_.find(name);
    if (it == modules_.end()) return y;
    const LoraFactors& f = it->second;
    const auto ct = y.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    Tensor d;
    if (ct == at::kFloat && !grad_enabled() && x.device().is_cpu() && f.A.scalar_type() == at::kFloat &&
        f.B.scalar_type() == at::kFloat && f.A.is_contiguous() && f.B.is_contiguous()) {
      auto shape = y.sizes().vec();
      d = nn::gemv_rows(nn::gemv_rows(x.to(at::kFloat), f.A), f.B).view(shape);
    } else {
      d = at::matmul(at::matmul(x.to(ct), f.A.to(ct).t()), f.B.to(ct).t());
    }
    return (y.to(ct) + d * scale_).to(y.scalar_type());
  }

 private:
  std::map<std::string, LoraFactors> modules_;
  double scale_;
};

std::string kinds_of(const models::CausalLM& model) {
  std::set<std::string> kinds;
  for (const auto& [name, w] : model.linear_layers()) kinds.insert(name.substr(name.rfind('.') + 1));
  std::string out;
  for (const auto& k : kinds) out += (out.empty() ? "" : ", ") + k;
  return out;
}

}  // namespace

double LoraConfig::scale() const {
  return use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r)) : lora_alpha / static_cast<double>(r);
}

std::vector<std::string> default_lora_targets(const models::CausalLM& model) {
  if (model.model_type() == "falcon_h1") return {"q_proj", "k_proj", "v_proj", "in_proj"};
  return {"q_proj", "k_proj", "v_proj", "o_proj"};
}

LoraSchedule paper_lora_schedule(const models::CausalLM& model) {
  LoraSchedule s;
  if (model.model_type() == "falcon_h1") s.lr = 1e-4;
  return s;
}

std::vector<std::string> match_lora_targets(const models::CausalLM& model, const std::vector<std::string>& targets) {
  if (targets.empty()) throw Error("LoRA: no target modules given");
  std::vector<std::string> out;
  std::set<std::string> used;
  for (const auto& [name, w] : model.linear_layers())
    for (const auto& t : targets)
      if (matches(name, t)) {
        out.push_back(name);
        used.insert(t);
        break;
      }
  for (const auto& t : targets)
    if (!used.count(t))
      throw Error("LoRA target '" + t + "' matches no linear layer of the model (its linear layers are: " +
                  kinds_of(model) + ")");
  return out;
}

int64_t LoraSet::num_params() const {
  int64_t n = 0;
  for (const auto& [name, f] : modules) n += f.A.numel() + f.B.numel();
  return n;
}

std::shared_ptr<const models::Adapter> LoraSet::adapter() const {
  return std::make_shared<LoraAdapter>(modules, config.scale());
}

LoraSet init_lora(const models::CausalLM& model, LoraConfig cfg, uint64_t seed) {
  if (cfg.r <= 0) throw Error("LoRA: rank must be positive (got " + std::to_string(cfg.r) + ")");
  if (!std::isfinite(cfg.lora_alpha)) throw Error("LoRA: lora_alpha must be finite");
  if (cfg.target_modules.empty()) cfg.target_modules = default_lora_targets(model);
  const auto names = match_lora_targets(model, cfg.target_modules);
  std::map<std::string, Tensor> weights;
  for (const auto& [name, w] : model.linear_layers()) weights[name] = w;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  LoraSet set;
  for (const auto& name : names) {
    const Tensor& w = weights.at(name);
    const int64_t out = nn::out_features(w), in = nn::in_features(w);
    // kaiming_uniform_(a = sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in).
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    Tensor A = at::empty({cfg.r, in}, at::kFloat).uniform_(-bound, bound, gen);
    set.modules[name] = {A, at::zeros({out, cfg.r}, at::kFloat)};
  }
  set.config = std::move(cfg);
  return set;
}

void check_lora(const LoraSet& set, const models::CausalLM& model, const std::string& where) {
  std::map<std::string, Tensor> weights;
  for (const auto& [name, w] : model.linear_layers()) weights[name] = w;
  for (const auto& [name, f] : set.modules) {
    auto it = weights.find(name);
    if (it == weights.end())
      throw Error(where + ": LoRA module '" + name + "' is not a linear layer of the model (its linear layers are: " +
                  kinds_of(model) + ")");
    const int64_t out = nn::out_features(it->second), in = nn::in_features(it->second);
    if (f.A.dim() != 2 || f.B.dim() != 2 || f.A.size(1) != in || f.B.size(0) != out || f.A.size(0) != f.B.size(1))
      throw Error(where + ": LoRA module '" + name + "' has factors A " + io::shape_to_string(f.A.sizes().vec()) +
                  " and B " + io::shape_to_string(f.B.sizes().vec()) + ", the layer is [" + std::to_string(out) +
                  ", " + std::to_string(in) + "] (expected A [r, " + std::to_string(in) + "], B [" +
                  std::to_string(out) + ", r])");
  }
}

std::string decoder_prefix(const std::string& model_dir) {
  io::ModelDir dir(model_dir);
  for (const auto& name : dir.names()) {
    const std::string& full = dir.full_name(name);
    if (full.size() > name.size() && ends_with(full, name)) return full.substr(0, full.size() - name.size());
  }
  return "";
}

void save_lora(const std::string& dir, const LoraSet& set, const std::string& prefix) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir + "': " + ec.message());
  std::vector<Tensor> keep;
  std::vector<std::pair<io::TensorSpec, const void*>> tensors;
  for (const auto& [name, f] : set.modules)
    for (const auto& [part, t] : {std::pair<const char*, Tensor>{"lora_A", f.A}, {"lora_B", f.B}}) {
      keep.push_back(t.detach().to(at::kCPU, at::kFloat).contiguous());
      tensors.push_back({io::TensorSpec{kPeftPrefix + prefix + name + "." + part + ".weight", io::DType::F32,
                                        keep.back().sizes().vec()},
                         keep.back().data_ptr()});
    }
  io::save_safetensors(dir + "/" + kWeights, tensors);
  const LoraConfig& c = set.config;
  json cfg = {{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"r", c.r},
              {"lora_alpha", c.lora_alpha},
              {"lora_dropout", 0.0},
              {"target_modules", c.target_modules},
              {"base_model_name_or_path", c.base_model},
              {"bias", "none"},
              {"fan_in_fan_out", false},
              {"inference_mode", true},
              {"init_lora_weights", true},
              {"modules_to_save", nullptr},
              {"layers_to_transform", nullptr},
              {"layers_pattern", nullptr},
              {"rank_pattern", json::object()},
              {"alpha_pattern", json::object()},
              {"use_rslora", c.use_rslora},
              {"use_dora", false},
              {"revision", nullptr}};
  io::write_file_atomic(dir + "/" + kConfig, cfg.dump(2));
  if (!set.s0_info.empty()) io::write_file_atomic(dir + "/s0.json", set.s0_info.dump(2));
}

LoraSet load_lora(const std::string& dir) {
  const std::string cfg_path = dir + "/" + kConfig, st_path = dir + "/" + kWeights;
  if (!fs::is_directory(dir)) throw FileNotFound("LoRA adapter directory '" + dir + "' does not exist");
  if (!fs::exists(cfg_path)) throw Error(dir + ": no " + kConfig + " (not a PEFT adapter directory)");
  if (!fs::exists(st_path))
    throw Error(dir + ": no " + kWeights + (fs::exists(dir + "/adapter_model.bin") ? " (adapter_model.bin, a pickle, is not read: convert it to safetensors)" : ""));
  json j = read_json_file(cfg_path);
  if (!j.is_object()) throw Error(cfg_path + ": must be a JSON object");
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  auto truthy = [&](const char* k) { return j.contains(k) && j[k].is_boolean() && j[k].get<bool>(); };
  auto nonempty = [&](const char* k) { return j.contains(k) && !j[k].is_null() && !j[k].empty(); };
  if (str("peft_type") != "LORA") throw Error(cfg_path + ": peft_type is '" + str("peft_type") + "', expected LORA");
  if (truthy("use_dora")) throw Error(cfg_path + ": DoRA adapters (use_dora) are not supported");
  if (truthy("fan_in_fan_out")) throw Error(cfg_path + ": fan_in_fan_out adapters (Conv1D layers) are not supported");
  if (j.contains("bias") && str("bias") != "none") throw Error(cfg_path + ": bias '" + str("bias") + "' is not supported (only 'none')");
  for (const char* k : {"rank_pattern", "alpha_pattern", "modules_to_save"})
    if (nonempty(k)) throw Error(cfg_path + ": '" + k + "' is not supported");
  LoraSet set;
  LoraConfig& c = set.config;
  try {
    c.r = j.at("r").get<int64_t>();
    c.lora_alpha = j.at("lora_alpha").get<double>();
  } catch (const json::exception& e) {
    throw Error(cfg_path + ": needs 'r' (int) and 'lora_alpha' (number): " + e.what());
  }
  if (c.r <= 0 || !std::isfinite(c.lora_alpha)) throw Error(cfg_path + ": 'r' must be positive and 'lora_alpha' finite");
  c.use_rslora = truthy("use_rslora");
  c.base_model = str("base_model_name_or_path");
  if (j.contains("target_modules")) {
    if (j["target_modules"].is_string()) c.target_modules = {j["target_modules"].get<std::string>()};
    else if (j["target_modules"].is_array())
      for (const auto& t : j["target_modules"])
        if (t.is_string()) c.target_modules.push_back(t.get<std::string>());
  }
  if (fs::exists(dir + "/s0.json")) set.s0_info = read_json_file(dir + "/s0.json");

  io::SafetensorsFile f(st_path);
  // Keys: [base_model.model.][model.[language_model.]]<module>.lora_{A,B}[.<adapter name>].weight
  static const std::regex key_re(R"(^(.*)\.lora_([AB])(\.[^.]+)?\.weight$)");
  for (const auto& key : f.names()) {
    std::smatch m;
    if (!std::regex_match(key, m, key_re)) throw Error(st_path + ": tensor '" + key + "' is not a LoRA factor (lora_A/lora_B)");
    std::string module = m[1];
    for (const char* p : {kPeftPrefix, "model.language_model.", "model."})
      if (module.rfind(p, 0) == 0) module = module.substr(std::string(p).size());
    const auto& t = f.get(key);
    if (t.dtype != io::DType::F32 && t.dtype != io::DType::BF16 && t.dtype != io::DType::F16)
      throw Error(st_path + ": tensor '" + key + "' has dtype " + io::dtype_name(t.dtype) + " (expected F32, BF16 or F16)");
    Tensor x = models::tensor_view(t).to(at::kFloat, false, true);
    require_finite(x, st_path + ": tensor '" + key + "'");
    (m[2] == "A" ? set.modules[module].A : set.modules[module].B) = x;
  }
  if (set.modules.empty()) throw Error(st_path + ": no LoRA factors");
  for (const auto& [name, fac] : set.modules) {
    if (!fac.A.defined() || !fac.B.defined())
      throw Error(st_path + ": module '" + name + "' lacks its lora_" + (fac.A.defined() ? "B" : "A") + " factor");
    if (fac.A.dim() != 2 || fac.B.dim() != 2 || fac.A.size(0) != c.r || fac.B.size(1) != c.r)
      throw Error(st_path + ": module '" + name + "' has factors A " + io::shape_to_string(fac.A.sizes().vec()) +
                  " and B " + io::shape_to_string(fac.B.sizes().vec()) + ", but r is " + std::to_string(c.r));
  }
  return set;
}

LoraSet load_lora(const std::string& dir, const models::CausalLM& model) {
  LoraSet set = load_lora(dir);
  check_lora(set, model, dir);
  return set;
}

void merge_lora(const std::string& model_dir, const LoraSet& set, const std::string& out_dir) {
  std::error_code eq;
  if (fs::exists(out_dir) && fs::equivalent(model_dir, out_dir, eq))
    throw Error("lora merge: --out must differ from the model directory");
  io::ModelDir dir(model_dir);
  // The full tensor name of each target's weight.
  std::map<std::string, const LoraFactors*> by_full;
  for (const auto& [name, f] : set.modules) {
    const std::string w = name + ".weight";
    if (!dir.has(w)) throw Error(model_dir + ": LoRA module '" + name + "' has no weight '" + w + "' in the checkpoint");
    const auto& info = dir.get(w);
    if (info.shape != std::vector<int64_t>{f.B.size(0), f.A.size(1)})
      throw Error(model_dir + ": weight '" + w + "' has shape " + io::shape_to_string(info.shape) +
                  ", the LoRA factors make [" + std::to_string(f.B.size(0)) + ", " + std::to_string(f.A.size(1)) + "]");
    by_full[dir.full_name(w)] = &f;
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error("cannot create directory '" + out_dir + "': " + ec.message());
  const double scale = set.config.scale();
  size_t merged = 0;
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    const std::string dst = out_dir + "/" + name;
    if (!ends_with(name, ".safetensors")) {
      io::write_file_atomic(dst, io::read_file(entry.path().string()));
      continue;
    }
    io::SafetensorsFile f(entry.path().string());
    std::vector<Tensor> keep;
    std::vector<std::pair<io::TensorSpec, const void*>> tensors;
    for (const auto& [key, t] : f.tensors()) {
      auto it = by_full.find(key);
      if (it == by_full.end()) {  // copied byte for byte
        tensors.push_back({io::TensorSpec{key, t.dtype, t.shape}, t.data});
        continue;
      }
      const LoraFactors& fac = *it->second;
      Tensor x = models::tensor_view(t);
      const auto ct = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      keep.push_back((x.to(ct) + at::matmul(fac.B.to(ct), fac.A.to(ct)) * scale).to(x.scalar_type()).contiguous());
      tensors.push_back({io::TensorSpec{key, t.dtype, t.shape}, keep.back().data_ptr()});
      ++merged;
    }
    io::save_safetensors(dst, tensors, f.metadata());
  }
  if (merged != by_full.size())
    throw Error("lora merge: merged " + std::to_string(merged) + " of " + std::to_string(by_full.size()) + " weights");
}

nlohmann::json inspect_json(const LoraSet& set, const std::string& dir) {
  nlohmann::json mods = nlohmann::json::array();
  for (const auto& [name, f] : set.modules)
    mods.push_back({{"module", name}, {"A", f.A.sizes().vec()}, {"B", f.B.sizes().vec()},
                    {"delta_norm", (at::matmul(f.B, f.A) * set.config.scale()).norm().item<double>()}});
  return {{"dir", dir}, {"r", set.config.r}, {"lora_alpha", set.config.lora_alpha},
          {"scale", set.config.scale()}, {"target_modules", set.config.target_modules},
          {"base_model", set.config.base_model}, {"params", set.num_params()},
          {"bytes", set.num_bytes()}, {"modules", mods}};
}

}  // namespace s0::adapters
