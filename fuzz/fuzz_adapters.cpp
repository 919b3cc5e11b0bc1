// The baselines' adapter directories, loaded and checked against the built-in model: a PEFT
// LoRA (adapter_config.json + adapter_model.safetensors), a state offset (meta.json +
// offsets.safetensors + config.json) and a PEFT prefix (adapter_config.json +
// adapter_model.safetensors). Needs libtorch: plain-driver build only.
// Input: a first line naming the kind ("lora", "offset" or "prefix"; anything else picks one
// from its first byte), then config "\n#####\n" safetensors bytes "\n#####\n" extra JSON
// (s0.json for LoRA and prefix, config.json for an offset).
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "fuzz_model.h"
#include "fuzz_util.h"
#include "s0/adapters/lora.h"
#include "s0/adapters/prefix.h"
#include "s0/adapters/state_offset.h"
#include "s0/models/model.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)s0::fuzz::builtin_model();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto [kind, rest] = s0::fuzz::split(in, "\n");
  if (kind != "lora" && kind != "offset" && kind != "prefix") {
    static const char* kinds[] = {"lora", "offset", "prefix"};
    kind = kinds[size ? data[0] % 3 : 0];
  }
  auto [config, rest2] = s0::fuzz::split(rest, "\n#####\n");
  auto [weights, extra] = s0::fuzz::split(rest2, "\n#####\n");
  const std::string dir = s0::fuzz::scratch_dir() + "/adapter";
  fs::remove_all(dir);
  fs::create_directories(dir);
  if (kind == "offset") {
    s0::fuzz::write_file("adapter/meta.json", config);
    s0::fuzz::write_file("adapter/offsets.safetensors", weights);
    if (!extra.empty()) s0::fuzz::write_file("adapter/config.json", extra);
  } else {
    s0::fuzz::write_file("adapter/adapter_config.json", config);
    s0::fuzz::write_file("adapter/adapter_model.safetensors", weights);
    if (!extra.empty()) s0::fuzz::write_file("adapter/s0.json", extra);
  }
  const auto& model = s0::fuzz::builtin_model();
  s0::fuzz::expect_clean("adapters", [&] {
    if (kind == "lora") {
      (void)s0::adapters::is_prefix_dir(dir);
      auto set = s0::adapters::load_lora(dir, model);
      (void)set.config.scale();
      (void)set.num_bytes();
      (void)s0::adapters::inspect_json(set, dir).dump();
      auto a = set.adapter();
      // The hook on one row of every module it touches (shapes came from the model).
      for (const auto& [name, w] : model.linear_layers()) {
        if (!set.modules.count(name)) continue;
        at::Tensor x = at::ones({1, 1, w.size(1)}), y = at::zeros({1, 1, w.size(0)});
        (void)a->linear_output(name, x, y);
      }
    } else if (kind == "offset") {
      (void)s0::adapters::is_offset_dir(dir);
      auto set = s0::adapters::load_offset_set(dir, model);
      (void)set.scale();
      (void)set.num_bytes();
      (void)set.adapter();
      (void)model.new_cache(1, set.adapter(0.5));
    } else {
      (void)s0::adapters::is_prefix_dir(dir);
      auto set = s0::adapters::load_prefix(dir, model);
      (void)set.num_bytes();
      auto a = set.adapter(model.attention_layers());
      for (auto l : model.attention_layers()) (void)a->prefix_kv(l);
      (void)model.new_cache(1, a);
    }
  });
  return 0;
}
