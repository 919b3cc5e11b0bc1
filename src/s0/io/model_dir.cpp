#include "s0/io/model_dir.h"

#include <filesystem>
#include <set>

#include "s0/io/atomic_file.h"
#include "s0/util/error.h"

namespace s0::io {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Python's json module writes the non-standard tokens Infinity, -Infinity and NaN (e.g.
// transformers saves Falcon-H1's default time_step_limit as [0.0, Infinity]). Outside
// strings they become null, which the config readers treat as "no value / unbounded".
std::string python_nonfinite_to_null(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_str = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (in_str) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    auto at = [&](const char* w) { return text.compare(i, std::char_traits<char>::length(w), w) == 0; };
    if (at("-Infinity")) out += "null", i += 8;
    else if (at("Infinity")) out += "null", i += 7;
    else if (at("NaN")) out += "null", i += 2;
    else out += c;
  }
  return out;
}

json read_json(const std::string& path) {
  std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    try {
      return json::parse(python_nonfinite_to_null(text));
    } catch (const json::exception&) {
    }
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

// Canonical name, or "" for tensors that are not part of the text decoder.
std::string canonical_name(const std::string& name) {
  auto starts = [&](const char* p) { return name.rfind(p, 0) == 0; };
  if (starts("model.visual.") || starts("mtp.") || starts("model.mtp.")) return "";
  if (starts("model.language_model.")) return name.substr(21);
  if (starts("model.")) return name.substr(6);
  return name;  // lm_head.weight, or an already-canonical name
}

}  // namespace

ModelDir::ModelDir(const std::string& dir) : dir_(dir) {
  while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
  if (!fs::is_directory(dir_)) throw FileNotFound("model directory '" + dir + "' does not exist");
  if (!fs::exists(config_path())) throw Error(dir_ + ": no config.json in the model directory");
  config_ = read_json(config_path());
  if (!config_.is_object())
    throw Error(config_path() + ": config must be a JSON object, found " + config_.type_name());

  const std::string single = dir_ + "/model.safetensors";
  const std::string index = dir_ + "/model.safetensors.index.json";
  if (fs::exists(index)) {
    json idx = read_json(index);
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
      throw Error(index + ": missing 'weight_map' object");
    std::set<std::string> shards;
    for (auto& [name, file] : idx["weight_map"].items()) {
      if (!file.is_string()) throw Error(index + ": weight_map['" + name + "'] is not a string");
      std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == ".." )
        throw Error(index + ": shard name '" + f + "' must be a plain file name");
      shards.insert(f);
    }
    for (const auto& f : shards) {
      if (!fs::exists(dir_ + "/" + f))
        throw Error(index + ": shard '" + f + "' listed in weight_map is missing");
      add_file(dir_ + "/" + f);
    }
    // Every tensor the index names must be in the shard it names.
    for (auto& [name, file] : idx["weight_map"].items()) {
      std::string c = canonical_name(name);
      if (c.empty()) continue;
      auto it = index_.find(c);
      if (it == index_.end() || it->second.file->path() != dir_ + "/" + file.get<std::string>())
        throw Error(index + ": tensor '" + name + "' is not in shard '" + file.get<std::string>() + "'");
    }
  } else if (fs::exists(single)) {
    add_file(single);
  } else {
    throw Error(dir_ + ": no model.safetensors or model.safetensors.index.json");
  }
}

void ModelDir::add_file(const std::string& path) {
  files_.push_back(std::make_unique<SafetensorsFile>(path));
  const SafetensorsFile* f = files_.back().get();
  for (const auto& name : f->names()) {
    std::string c = canonical_name(name);
    if (c.empty()) continue;
    auto [it, inserted] = index_.emplace(c, Entry{f, name});
    if (!inserted)
      throw Error(dir_ + ": tensor '" + c + "' appears twice ('" + it->second.full_name + "' in " +
                  it->second.file->path() + " and '" + name + "' in " + path + ")");
  }
}

const TensorInfo& ModelDir::get(const std::string& canonical) const {
  auto it = index_.find(canonical);
  if (it == index_.end())
    throw Error(dir_ + ": tensor '" + canonical + "' not found in the checkpoint");
  return it->second.file->get(it->second.full_name);
}

const TensorInfo& ModelDir::get(const std::string& canonical,
                                const std::vector<int64_t>& shape) const {
  const TensorInfo& t = get(canonical);
  if (t.shape != shape)
    throw Error(file_of(canonical) + ": tensor '" + t.name + "' has shape " + shape_to_string(t.shape) +
                ", expected " + shape_to_string(shape));
  return t;
}

const std::string& ModelDir::file_of(const std::string& canonical) const {
  auto it = index_.find(canonical);
  if (it == index_.end())
    throw Error(dir_ + ": tensor '" + canonical + "' not found in the checkpoint");
  return it->second.file->path();
}

const std::string& ModelDir::full_name(const std::string& canonical) const {
  auto it = index_.find(canonical);
  if (it == index_.end())
    throw Error(dir_ + ": tensor '" + canonical + "' not found in the checkpoint");
  return it->second.full_name;
}

std::vector<std::string> ModelDir::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : index_) out.push_back(k);
  return out;
}

}  // namespace s0::io
