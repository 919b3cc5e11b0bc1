// State-set directories (meta.json, config.json, states.safetensors), loaded and checked
// against the built-in model, then scaled for injection. Needs libtorch: plain-driver build
// only. Input: meta.json "\n#####\n" config.json "\n#####\n" states.safetensors bytes.
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "fuzz_model.h"
#include "fuzz_util.h"
#include "s0/adapters/state_set.h"
#include "s0/models/model.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  (void)s0::fuzz::builtin_model();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto [meta, rest] = s0::fuzz::split(in, "\n#####\n");
  auto [config, states] = s0::fuzz::split(rest, "\n#####\n");
  const std::string dir = s0::fuzz::scratch_dir() + "/set";
  std::filesystem::create_directories(dir);
  s0::fuzz::write_file("set/meta.json", meta);
  s0::fuzz::write_file("set/config.json", config);
  s0::fuzz::write_file("set/states.safetensors", states);
  s0::fuzz::expect_clean("state_set", [&] {
    auto set = s0::adapters::load_state_set(dir, s0::fuzz::builtin_model());
    (void)set.alpha();
    (void)set.normalize();
    (void)set.num_bytes();
    (void)set.scaled();
    (void)set.scaled(0.5);
    (void)set.adapter();
  });
  s0::fuzz::expect_clean("state_set/layers", [&] {
    (void)s0::adapters::select_layers(std::string(meta.substr(0, 64)), s0::fuzz::builtin_model().recurrent_layers());
  });
  return 0;
}
