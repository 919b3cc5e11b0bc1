#include "s0/adapters/state_set.h"

#include <algorithm>
#include <filesystem>

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

namespace {

json read_json(const std::string& path) {
  try {
    return json::parse(io::read_file(path));
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace

StateSet load_state_set(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error("state set directory '" + dir + "' does not exist");
  const std::string meta_path = dir + "/meta.json";
  const std::string st_path = dir + "/states.safetensors";
  if (!fs::exists(meta_path)) throw Error(dir + ": no meta.json (not a state-set directory)");
  if (!fs::exists(st_path)) throw Error(dir + ": no states.safetensors (not a state-set directory)");
  StateSet set;
  json meta = read_json(meta_path);
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
  if (fs::exists(dir + "/config.json")) set.config = read_json(dir + "/config.json");
  if (!set.config.is_object()) throw Error(dir + "/config.json: must be a JSON object");

  io::SafetensorsFile f(st_path);
  for (const auto& name : f.names()) {
    // Only the canonical decimal spelling the reference writes (str(int)): std::stoll alone
    // would accept " 1", "+1" and "01", and "1"/"01" would silently overwrite each other.
    int64_t layer = -1;
    if (!name.empty() && name.size() <= 18 &&
        std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
      layer = std::stoll(name);
    if (layer < 0 || std::to_string(layer) != name)
      throw Error(st_path + ": tensor key '" + name + "' is not a layer index (expected a decimal integer)");
    const auto& t = f.get(name);
    // The reference stores unscaled float32; a lower-precision state would be silently quantised.
    if (t.dtype != io::DType::F32)
      throw Error(st_path + ": tensor '" + name + "' has dtype " + io::dtype_name(t.dtype) + ", expected F32");
    if (t.shape != set.state_shape)
      throw Error(st_path + ": tensor '" + name + "' has shape " + io::shape_to_string(t.shape) +
                  ", but meta.json state_shape is " + io::shape_to_string(set.state_shape));
    set.states[layer] = models::tensor_view(t).to(at::kFloat, false, true);
  }
  if (has_listed) {  // also when it lists no layers: [] with tensors present is a mismatch
    std::vector<int64_t> have;
    for (const auto& [l, s] : set.states) have.push_back(l);
    std::sort(listed.begin(), listed.end());
    if (have != listed)
      throw Error(dir + ": meta.json recurrent_layers " + io::shape_to_string(listed) +
                  " differ from the layers in states.safetensors " + io::shape_to_string(have));
  }
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
  for (const auto& [l, s] : set.states) {
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

void save_state_set(const std::string& dir, const StateSet& set) {
  if (!set.config.is_object()) throw Error("save_state_set: config must be a JSON object");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir + "': " + ec.message());
  std::vector<Tensor> keep;
  std::vector<std::pair<io::TensorSpec, const void*>> tensors;
  std::vector<int64_t> layers;
  for (const auto& [l, s] : set.states) {
    if (s.sizes().vec() != set.state_shape)
      throw Error("save_state_set: layer " + std::to_string(l) + " has shape " +
                  io::shape_to_string(s.sizes().vec()) + ", expected " + io::shape_to_string(set.state_shape));
    // To the CPU: a state trained on a GPU would otherwise hand a device pointer to the writer.
    keep.push_back(s.detach().to(at::kCPU, at::kFloat).contiguous());
    tensors.push_back({io::TensorSpec{std::to_string(l), io::DType::F32, set.state_shape},
                       keep.back().data_ptr()});
    layers.push_back(l);
  }
  io::save_safetensors(dir + "/states.safetensors", tensors);
  json meta = {{"arch", set.arch}, {"recurrent_layers", layers}, {"state_shape", set.state_shape}};
  io::write_file_atomic(dir + "/meta.json", meta.dump(2));
  io::write_file_atomic(dir + "/config.json", set.config.dump(2));
}

}  // namespace s0::adapters
