#pragma once
// A model directory as Hugging Face ships it: config.json plus model.safetensors, or
// sharded model-0000x-of-0000y.safetensors with model.safetensors.index.json. Tensors are
// looked up by their canonical name: the decoder prefix (`model.language_model.` or
// `model.`) is stripped; `model.visual.*` and `mtp.*` are ignored. Torch-free.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/io/safetensors.h"

namespace s0::io {

class ModelDir {
 public:
  explicit ModelDir(const std::string& dir);

  const std::string& path() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  std::string config_path() const { return dir_ + "/config.json"; }

  bool has(const std::string& canonical) const { return index_.count(canonical) != 0; }
  // Throws s0::Error naming the directory and tensor when absent.
  const TensorInfo& get(const std::string& canonical) const;
  // As get(), and checks the shape: "<file>: tensor '<name>' has shape [..], expected [..]".
  const TensorInfo& get(const std::string& canonical, const std::vector<int64_t>& shape) const;
  // The file holding a tensor (for messages).
  const std::string& file_of(const std::string& canonical) const;
  // The tensor's name in its file ("model.language_model.layers.0.mlp.up_proj.weight").
  const std::string& full_name(const std::string& canonical) const;
  std::vector<std::string> names() const;

 private:
  struct Entry {
    const SafetensorsFile* file;
    std::string full_name;
  };
  void add_file(const std::string& path);

  std::string dir_;
  nlohmann::json config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> index_;
};


}  // namespace s0::io
