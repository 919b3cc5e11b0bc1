// Model config.json for every family (Qwen3.5, Falcon-H1, Qwen2): parse, validate, derive the tensor
// table and parameter count, write back. Input: the config.json text.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "s0/models/falcon_h1_config.h"
#include "s0/models/qwen2_config.h"
#include "s0/models/qwen35_config.h"

namespace {

volatile int64_t g_sink;

template <typename C, typename Shapes>
void one_family(const nlohmann::json& j, Shapes shapes) {
  s0::fuzz::expect_clean("config", [&] {
    C c = C::from_json(j, "config.json");
    c.validate("config.json");
    int64_t sink = c.num_parameters();
    for (const auto& t : shapes(c)) sink += static_cast<int64_t>(t.shape.size());
    // Round trip: what we write must read back.
    C d = C::from_json(c.to_json(), "config.json (written back)");
    d.validate("config.json (written back)");
    g_sink = sink;
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data, data + size);
  } catch (const nlohmann::json::exception&) {
    return 0;  // not JSON: the model-directory reader reports that itself
  }
  one_family<s0::models::Qwen35Config>(j, [](const auto& c) { return s0::models::qwen35_tensor_shapes(c); });
  one_family<s0::models::FalconH1Config>(j, [](const auto& c) { return s0::models::falcon_h1_tensor_shapes(c); });
  one_family<s0::models::Qwen2Config>(j, [](const auto& c) { return s0::models::qwen2_tensor_shapes(c); });
  return 0;
}
