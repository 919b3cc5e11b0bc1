#include "s0/adapters/state_offset.h"

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

namespace {

constexpr const char* kKind = "state_offset";

class OffsetAdapter : public models::Adapter {
 public:
  OffsetAdapter(std::string arch, models::StateMap d) : mamba_(arch == "mamba2"), d_(std::move(d)) {
    if (arch != "mamba2" && arch != "gated_delta_net")
      throw Error("state offset: unknown recurrent architecture '" + arch + "'");
  }
  bool has_readout_hook() const override { return true; }
  Tensor recurrent_readout(int64_t layer, const Tensor& query, const Tensor& o) const override {
    auto it = d_.find(layer);
    if (it == d_.end()) return o;
    Tensor d = it->second.to(o.scalar_type());
    // GatedDeltaNet: q [b, H, L, K] @ D [H, K, V]; Mamba-2: C [b, H, L, N] @ D^T [H, N, P].
    return o + at::matmul(query.to(o.scalar_type()), mamba_ ? d.transpose(-1, -2) : d);
  }

 private:
  bool mamba_;
  models::StateMap d_;
};

}  // namespace

std::shared_ptr<const models::Adapter> offset_adapter(const std::string& arch, models::StateMap offsets) {
  return std::make_shared<OffsetAdapter>(arch, std::move(offsets));
}

double OffsetSet::scale() const {
  auto it = config.find("scale");
  if (it == config.end() || it->is_null()) return 1.0;
  if (!it->is_number()) throw Error("state offset config: 'scale' must be a number");
  return it->get<double>();
}

std::shared_ptr<const models::Adapter> OffsetSet::adapter(std::optional<double> scale_override) const {
  const double s = scale_override ? *scale_override : scale();
  models::StateMap d;
  for (const auto& [l, t] : offsets) d[l] = s == 1.0 ? t : t * s;
  return offset_adapter(arch, std::move(d));
}

int64_t OffsetSet::num_params() const {
  int64_t n = 0;
  for (const auto& [l, t] : offsets) n += t.numel();
  return n;
}

// meta.json says "kind": "state_offset" (any other value or type: not an offset).
static bool kind_is_offset(const json& j) {
  return j.is_object() && j.contains("kind") && j["kind"].is_string() && j["kind"].get<std::string>() == kKind;
}

bool is_offset_dir(const std::string& dir) {
  const std::string meta = dir + "/meta.json";
  if (!fs::exists(meta)) return false;
  return kind_is_offset(read_json_file(meta));
}

OffsetSet load_offset_set(const std::string& dir) {
  const std::string meta_path = dir + "/meta.json", st_path = dir + "/offsets.safetensors";
  if (!fs::is_directory(dir)) throw FileNotFound("state offset directory '" + dir + "' does not exist");
  if (!fs::exists(meta_path) || !fs::exists(st_path))
    throw Error(dir + ": needs meta.json and offsets.safetensors (not a state-offset directory)");
  json meta = read_json_file(meta_path);
  if (!kind_is_offset(meta))
    throw Error(meta_path + ": kind is not '" + std::string(kKind) + "' (an S0 state set? load it with --states)");
  OffsetSet set;
  try {
    set.arch = meta.at("arch").get<std::string>();
    set.state_shape = meta.at("state_shape").get<std::vector<int64_t>>();
  } catch (const json::exception& e) {
    throw Error(meta_path + ": needs 'arch' (string) and 'state_shape' (list of ints): " + e.what());
  }
  if (fs::exists(dir + "/config.json")) set.config = read_json_file(dir + "/config.json");
  if (!set.config.is_object()) throw Error(dir + "/config.json: must be a JSON object");
  io::SafetensorsFile f(st_path);
  for (const auto& name : f.names()) {
    const int64_t layer = parse_layer_key(name, st_path);
    const auto& t = f.get(name);
    if (t.dtype != io::DType::F32) throw Error(st_path + ": tensor '" + name + "' has dtype " + io::dtype_name(t.dtype) + ", expected F32");
    if (t.shape != set.state_shape)
      throw Error(st_path + ": tensor '" + name + "' has shape " + io::shape_to_string(t.shape) +
                  ", but meta.json state_shape is " + io::shape_to_string(set.state_shape));
    Tensor x = models::tensor_view(t).to(at::kFloat, false, true);
    require_finite(x, st_path + ": tensor '" + name + "'");
    set.offsets[layer] = x;
  }
  return set;
}

OffsetSet load_offset_set(const std::string& dir, const models::CausalLM& model) {
  OffsetSet set = load_offset_set(dir);
  if (set.arch != model.recurrent_arch())
    throw Error(dir + ": state offset is for arch '" + set.arch + "', the model's recurrent layers are '" +
                model.recurrent_arch() + "'");
  if (set.state_shape != model.state_shape())
    throw Error(dir + ": state_shape " + io::shape_to_string(set.state_shape) + " does not match the model's " +
                io::shape_to_string(model.state_shape()));
  const auto rec = model.recurrent_layers();
  for (const auto& [l, t] : set.offsets)
    if (std::find(rec.begin(), rec.end(), l) == rec.end())
      throw Error(dir + ": offset for layer " + std::to_string(l) + ", which is not a recurrent layer of the model " +
                  "(recurrent layers: " + io::shape_to_string(rec) + ")");
  return set;
}

void save_offset_set(const std::string& dir, const OffsetSet& set) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory '" + dir + "': " + ec.message());
  std::vector<Tensor> keep;
  std::vector<std::pair<io::TensorSpec, const void*>> tensors;
  std::vector<int64_t> layers;
  for (const auto& [l, t] : set.offsets) {
    if (t.sizes().vec() != set.state_shape)
      throw Error("save_offset_set: layer " + std::to_string(l) + " has shape " + io::shape_to_string(t.sizes().vec()) +
                  ", expected " + io::shape_to_string(set.state_shape));
    keep.push_back(t.detach().to(at::kCPU, at::kFloat).contiguous());
    tensors.push_back({io::TensorSpec{std::to_string(l), io::DType::F32, set.state_shape}, keep.back().data_ptr()});
    layers.push_back(l);
  }
  io::save_safetensors(dir + "/offsets.safetensors", tensors);
  json meta = {{"kind", kKind}, {"arch", set.arch}, {"recurrent_layers", layers}, {"state_shape", set.state_shape}};
  io::write_file_atomic(dir + "/meta.json", meta.dump(2));
  io::write_file_atomic(dir + "/config.json", set.config.dump(2));
}

}  // namespace s0::adapters
