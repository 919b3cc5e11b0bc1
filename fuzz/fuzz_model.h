#pragma once
// The built-in model (assets/builtin/model, float32, one thread) for the harnesses that check
// what they load against a model (state_set, adapters). Needs libtorch: plain-driver builds.
#include <ATen/Parallel.h>

#include <memory>
#include <string>

#include "s0/models/model.h"

namespace s0::fuzz {

// Loaded by the first call (from LLVMFuzzerInitialize), kept for the process.
inline const s0::models::CausalLM& builtin_model() {
  static const std::shared_ptr<s0::models::CausalLM> model = [] {
    at::set_num_threads(1);
    return s0::models::load_model(std::string(S0_FUZZ_SOURCE_DIR) + "/assets/builtin/model", at::kFloat);
  }();
  return *model;
}

}  // namespace s0::fuzz
