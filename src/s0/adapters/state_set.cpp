#include "s0/adapters/state_set.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <torch/csrc/jit/serialization/pickle.h>

#include "s0/io/atomic_file.h"
#include "s0/io/safetensors.h"
#include "s0/models/weights.h"
#include "s0/util/error.h"

namespace s0::adapters {

namespace fs = std::filesystem;
using nlohmann::json;

double default_alpha(const std::string& arch) {
  if (arch == "gated_delta_net") return 0.07;
  if (arch == "mamba2") return 0.65;
  throw Error("no default alpha for recurrent architecture '" + arch + "'");
}

std::vector<int64_t> select_layers(const std::string& spec, const std::vector<int64_t>& rec) {
  const int64_t n = static_cast<int64_t>(rec.size());
  auto slice = [&](int64_t a, int64_t b) { return std::vector<int64_t>(rec.begin() + a, rec.begin() + b); };
  if (spec == "all") return rec;
  if (spec == "early") return slice(0, n / 3);
  if (spec == "middle") return slice(n / 3, 2 * n / 3);
  if (spec == "late") return slice(2 * n / 3, n);
  std::vector<int64_t> out;
  auto bad = [&](const std::string& why) {
    return Error("--layers '" + spec + "': " + why + " (expected all, early, middle, late or a list like 0-7,12)");
  };
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t end = spec.find(',', pos);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(pos, end - pos);
    size_t dash = item.find('-');
    auto num = [&](const std::string& s) {
      // (At most 9 digits: std::stoll would throw out_of_range on longer ones; found by fuzz_state_set.)
      if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
        throw bad("'" + item + "' is not a layer index or range");
      return std::stoll(s);
    };
    int64_t a = num(dash == std::string::npos ? item : item.substr(0, dash));
    int64_t b = dash == std::string::npos ? a : num(item.substr(dash + 1));
    if (b < a) throw bad("empty range '" + item + "'");
    for (int64_t l = a; l <= b; ++l) {
      if (std::find(rec.begin(), rec.end(), l) == rec.end())
        throw bad("layer " + std::to_string(l) + " is not a recurrent layer; recurrent layers are " +
                  io::shape_to_string(rec));
      if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
    }
    pos = end + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

double StateSet::alpha() const {
  auto it = config.find("alpha");
  if (it == config.end() || it->is_null()) return default_alpha(arch);
  if (!it->is_number()) throw Error("state set config: 'alpha' must be a number or null");
  return it->get<double>();
}

bool StateSet::normalize() const {
  auto it = config.find("normalize");
  return it != config.end() && it->is_boolean() && it->get<bool>();
}

Tensor scale_state(const Tensor& s, double alpha, bool normalize) {
  if (!normalize) return s * alpha;
  const double n = s.norm().item<double>();
  return n > 0 ? s * (alpha / n) : at::zeros_like(s);
}

models::StateMap StateSet::scaled(std::optional<double> alpha_override) const {
  // Not value_or(alpha()): an explicit override must not depend on the config's alpha.
  const double a = alpha_override ? *alpha_override : alpha();
  models::StateMap out;
  for (const auto& [l, s] : states) out[l] = scale_state(s, a, normalize());
  return out;
}

std::shared_ptr<const models::Adapter> StateSet::adapter(std::optional<double> alpha_override) const {
  return std::make_shared<models::InitialStates>(scaled(alpha_override));
}

int64_t StateSet::num_bytes() const {
  int64_t n = 0;
  for (const auto& [l, s] : states) n += s.numel() * 4;
  return n;
}

const std::vector<std::string>& reference_config_keys() {
  static const std::vector<std::string> keys = {"n_steps",   "lr",        "l2_lambda", "alpha",
                                                "normalize", "grad_clip", "max_length"};
  return keys;
}

// A tensor key as the reference writes it (str(int)): only the canonical decimal spelling;
// std::stoll alone would accept " 1", "+1" and "01", and "1"/"01" would overwrite each other.
int64_t parse_layer_key(const std::string& name, const std::string& file) {
  int64_t layer = -1;
  if (!name.empty() && name.size() <= 18 &&
      std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
    layer = std::stoll(name);
  if (layer < 0 || std::to_string(layer) != name)
    throw Error(file + ": tensor key '" + name + "' is not a layer index (expected a decimal integer)");
  return layer;
}

void require_finite(const Tensor& t, const std::string& what) {
  Tensor bad = at::isfinite(t).logical_not().flatten();
  const int64_t n = bad.sum().item<int64_t>();
  if (n == 0) return;
  const int64_t i = bad.nonzero().flatten()[0].item<int64_t>();
  const double v = t.flatten()[i].item<double>();
  throw Error(what + " contains " + std::to_string(n) + " non-finite value" + (n == 1 ? "" : "s") +
              " (first: " + (std::isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf") + " at flat index " +
              std::to_string(i) + "); refusing to use it");
}

json read_json_file(const std::string& path) {
  try {
    return json::parse(io::read_file(path));
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

namespace {

// The reference's fallback: a torch.save()d dict {layer: float32 tensor} (keys str or int),
// read with libtorch's pickle loader (torch.save's zip format).
std::map<int64_t, Tensor> read_states_pt(const std::string& path) {
  const std::string bytes = io::read_file(path);
  c10::IValue v;
  try {
    v = torch::jit::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg = msg.substr(0, msg.find('\n'));
    throw Error(path + ": not a readable torch.save() file: " + msg);
  }
  if (!v.isGenericDict()) throw Error(path + ": expected a dict {layer index: tensor}, found " + v.tagKind());
  std::map<int64_t, Tensor> out;
  for (const auto& e : v.toGenericDict()) {
    std::string name;
    if (e.key().isString()) name = e.key().toStringRef();
    else if (e.key().isInt()) name = std::to_string(e.key().toInt());
    else throw Error(path + ": dict key of type " + e.key().tagKind() + " is not a layer index");
    const int64_t layer = parse_layer_key(name, path);
    if (!e.value().isTensor()) throw Error(path + ": value for '" + name + "' is not a tensor");
    if (out.count(layer)) throw Error(path + ": layer " + name + " appears twice");
    out[layer] = e.value().toTensor();
  }
  return out;
}

}  // namespace

StateSet load_state_set(const std::string& dir) {
  if (!fs::is_directory(dir)) throw FileNotFound("state set directory '" + dir + "' does not exist");
  const std::string meta_path = dir + "/meta.json";
  std::string st_path = dir + "/states.safetensors";
  const bool pickled = !fs::exists(st_path) && fs::exists(dir + "/states.pt");
  if (pickled) st_path = dir + "/states.pt";
  if (!fs::exists(meta_path)) throw Error(dir + ": no meta.json (not a state-set directory)");
  if (!fs::exists(st_path)) throw Error(dir + ": no states.safetensors or states.pt (not a state-set directory)");
  StateSet set;
  json meta = read_json_file(meta_path);
  try {
    set.arch = meta.at("arch").get<std::string>();
    set.state_shape = meta.at("state_shape").get<std::vector<int64_t>>();
  } catch (const json::exception& e) {
    throw Error(meta_path + ": needs 'arch' (string) and 'state_shape' (list of ints): " + e.what());
  }
  std::vector<int64_t> listed;
  const bool has_listed = meta.contains("recurrent_layers");
  if (has_listed) {
    try {
      listed = meta["recurrent_layers"].get<std::vector<int64_t>>();
    } catch (const json::exception&) {
      throw Error(meta_path + ": 'recurrent_layers' must be a list of layer indices");
    }
  }
  if (fs::exists(dir + "/config.json")) set.config = read_json_file(dir + "/config.json");
  if (!set.config.is_object()) throw Error(dir + "/config.json: must be a JSON object");
  if (fs::exists(dir + "/s0.json")) {
    json extra = read_json_file(dir + "/s0.json");
    if (!extra.is_object()) throw Error(dir + "/s0.json: must be a JSON object");
    for (auto& [k, v] : extra.items())
      if (!set.config.contains(k)) set.config[k] = v;  // config.json wins for the reference's keys
  }

  std::map<int64_t, Tensor> raw;
  if (pickled) {
    raw = read_states_pt(st_path);
  } else {
    io::SafetensorsFile f(st_path);
    for (const auto& name : f.names()) {
      const auto& t = f.get(name);
      // The reference stores unscaled float32; a lower-precision state would be silently quantised.
      if (t.dtype != io::DType::F32)
        throw Error(st_path + ": tensor '" + name + "' has dtype " + io::dtype_name(t.dtype) + ", expected F32");
      raw[parse_layer_key(name, st_path)] = models::tensor_view(t).to(at::kFloat, false, true);
    }
  }
  std::vector<int64_t> have;
  for (auto& [layer, t] : raw) {
    const std::string name = "tensor '" + std::to_string(layer) + "'";
    if (t.scalar_type() != at::kFloat)
      throw Error(st_path + ": " + name + " has dtype " + std::string(c10::toString(t.scalar_type())) +
                  ", expected float32");
    if (t.sizes().vec() != set.state_shape)
      throw Error(st_path + ": " + name + " has shape " + io::shape_to_string(t.sizes().vec()) +
                  ", but meta.json state_shape is " + io::shape_to_string(set.state_shape));
    require_finite(t, st_path + ": " + name + " (layer " + std::to_string(layer) + ")");
    have.push_back(layer);
    // A zero state is exactly no state: not kept (an untuned layer of a full set).
    if (t.count_nonzero().item<int64_t>() == 0) continue;
    set.states[layer] = t.contiguous();
  }
  if (has_listed) {  // also when it lists no layers: [] with tensors present is a mismatch
    std::sort(listed.begin(), listed.end());
    if (have != listed)
      throw Error(dir + ": meta.json recurrent_layers " + io::shape_to_string(listed) +
                  " differ from the layers in " + fs::path(st_path).filename().string() + " " +
                  io::shape_to_string(have));
  }
  set.recurrent_layers = have;
  return set;
}

StateSet load_state_set(const std::string& dir, const models::CausalLM& model) {
  StateSet set = load_state_set(dir);
  if (set.arch != model.recurrent_arch())
    throw Error(dir + ": state set is for arch '" + set.arch + "', the model's recurrent layers are '" +
                model.recurrent_arch() + "'");
  if (set.state_shape != model.state_shape())
    throw Error(dir + ": state_shape " + io::shape_to_string(set.state_shape) +
                " does not match the model's " + io::shape_to_string(model.state_shape()));
  const auto rec = model.recurrent_layers();
  for (int64_t l : set.recurrent_layers) {
    if (l >= model.num_layers())
      throw Error(dir + ": state for layer " + std::to_string(l) + ", but the model has only " +
                  std::to_string(model.num_layers()) + " layers (recurrent layers: " +
                  io::shape_to_string(rec) + ")");
    if (std::find(rec.begin(), rec.end(), l) == rec.end())
      throw Error(dir + ": state for layer " + std::to_string(l) +
                  ", which is not a recurrent layer of the model (an attention layer; recurrent layers: " +
                  io::shape_to_string(rec) + ")");
  }
  return set;
}

namespace {

// config.json as the reference's S0Config.save() writes it: its keys in its order, ints as
// ints, floats as floats, alpha null when it is the architecture default.
nlohmann::ordered_json reference_config(const StateSet& set) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& key : reference_config_keys()) {
    auto it = set.config.find(key);
    if (it == set.config.end()) continue;
    const json& v = *it;
    auto bad = [&](const char* want) {
      return Error("save_state_set: config '" + key + "' must be " + want + ", found " + v.dump());
    };
    if (key == "n_steps" || key == "max_length") {
      if (v.is_number_integer()) out[key] = v.get<int64_t>();
      else if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) out[key] = static_cast<int64_t>(v.get<double>());
      else throw bad("an integer");
    } else if (key == "normalize") {
      if (!v.is_boolean()) throw bad("true or false");
      out[key] = v.get<bool>();
    } else if (key == "alpha") {
      if (v.is_null()) out[key] = nullptr;
      else if (!v.is_number()) throw bad("a number or null");
      else if (v.get<double>() == default_alpha(set.arch)) out[key] = nullptr;
      else out[key] = v.get<double>();
    } else {
      if (!v.is_number()) throw bad("a number");
      out[key] = v.get<double>();
    }
  }
  return out;
}

}  // namespace

void save_state_set(const std::string& dir, const StateSet& set) {
  if (!set.config.is_object()) throw Error("save_state_set: config must be a JSON object");
  const nlohmann::ordered_json ref_config = reference_config(set);  // validates before writing
  json extra = json::object();
  for (auto& [k, v] : set.config.items())
    if (!ref_config.contains(k)) extra[k] = v;
  std::vector<int64_t> layers = set.recurrent_layers;
  for (const auto& [l, s] : set.states) {
    if (s.sizes().vec() != set.state_shape)
      throw Error("save_state_set: layer " + std::to_string(l) + " has shape " +
                  io::shape_to_string(s.sizes().vec()) + ", expected " + io::shape_to_string(set.state_shape));
    if (!set.recurrent_layers.empty() &&
        std::find(layers.begin(), layers.end(), l) == layers.end())
      throw Error("save_state_set: layer " + std::to_string(l) + " has a state but is not among the recurrent layers " +
                  io::shape_to_string(set.recurrent_layers));
    if (set.recurrent_layers.empty()) layers.push_back(l);
  }
  std::sort(layers.begin(), layers.end());
  layers.erase(std::unique(layers.begin(), layers.end()), layers.end());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir + "': " + ec.message());
  std::vector<Tensor> keep;
  std::vector<std::pair<io::TensorSpec, const void*>> tensors;
  for (int64_t l : layers) {
    auto it = set.states.find(l);
    // To the CPU: a state trained on a GPU would otherwise hand a device pointer to the writer.
    keep.push_back(it != set.states.end() ? it->second.detach().to(at::kCPU, at::kFloat).contiguous()
                                          : at::zeros(set.state_shape, at::kFloat));
    tensors.push_back({io::TensorSpec{std::to_string(l), io::DType::F32, set.state_shape},
                       keep.back().data_ptr()});
  }
  // No "__metadata__": safetensors.torch.save_file() without metadata writes none.
  io::save_safetensors(dir + "/states.safetensors", tensors, {});
  nlohmann::ordered_json meta = {{"arch", set.arch}, {"recurrent_layers", layers}, {"state_shape", set.state_shape}};
  io::write_file_atomic(dir + "/meta.json", meta.dump(2));
  io::write_file_atomic(dir + "/config.json", ref_config.dump(2));
  if (!extra.empty()) {
    io::write_file_atomic(dir + "/s0.json", extra.dump(2));
  } else {
    fs::remove(dir + "/s0.json", ec);
  }
}

nlohmann::json inspect_json(const StateSet& set, const std::string& dir) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& [l, s] : set.states)
    layers.push_back({{"layer", l}, {"norm", s.norm().item<double>()}, {"max_abs", s.abs().max().item<double>()}});
  return {{"dir", dir},        {"arch", set.arch},         {"state_shape", set.state_shape},
          {"layers", layers},  {"alpha", set.alpha()},     {"normalize", set.normalize()},
          {"bytes", set.num_bytes()}, {"config", set.config}};
}

}  // namespace s0::adapters
