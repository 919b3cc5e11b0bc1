// config.json values no real model has are refused with the key named, before anything
// multiplies them (found by fuzz/fuzz_config.cpp: a float too large for an integer field was
// converted with undefined behaviour; absurd sizes overflowed or exhausted memory).
#include <gtest/gtest.h>

#include <limits>

#include <nlohmann/json.hpp>

#include "s0/models/falcon_h1_config.h"
#include "s0/models/qwen35_config.h"
#include "s0/util/error.h"

using namespace s0;
using nlohmann::json;

namespace {

template <typename C>
void expect_refused(const json& j, const std::string& needle) {
  try {
    (void)C::from_json(j, "config.json");
    FAIL() << "accepted: " << j.dump();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(ConfigLimits, Qwen35AbsurdValues) {
  const json ok = models::Qwen35Config::preset("tiny").to_json();
  EXPECT_NO_THROW((void)models::Qwen35Config::from_json(ok, "config.json"));
  json j = ok;
  j["text_config"]["vocab_size"] = 1e300;
  expect_refused<models::Qwen35Config>(j, "'vocab_size' must be an integer");
  j = ok;
  j["text_config"]["hidden_size"] = 4096.5;
  expect_refused<models::Qwen35Config>(j, "'hidden_size' must be an integer");
  j = ok;
  j["text_config"]["hidden_size"] = 4096.0;  // a whole float is an integer
  j["text_config"]["intermediate_size"] = int64_t{1} << 40;
  expect_refused<models::Qwen35Config>(j, "'intermediate_size' = 1099511627776 is larger than any real model's");
  j = ok;
  j["text_config"].erase("layer_types");
  j["text_config"]["num_hidden_layers"] = int64_t{1} << 40;
  expect_refused<models::Qwen35Config>(j, "'num_hidden_layers'");
  j = ok;
  j["text_config"]["rope_parameters"]["partial_rotary_factor"] = 1e300;  // where the preset keeps it
  expect_refused<models::Qwen35Config>(j, "partial_rotary_factor");
  j = ok;
  for (const char* k : {"hidden_size", "intermediate_size", "vocab_size"}) j["text_config"][k] = 1 << 24;
  expect_refused<models::Qwen35Config>(j, "parameters, more than any real model");
}

TEST(ConfigLimits, FalconH1AbsurdValues) {
  const json ok = models::FalconH1Config::preset("tiny").to_json();
  EXPECT_NO_THROW((void)models::FalconH1Config::from_json(ok, "config.json"));
  json j = ok;
  j["hidden_size"] = 4e9;
  expect_refused<models::FalconH1Config>(j, "'hidden_size' = 4000000000 is larger");
  j = ok;
  j.erase("mamba_d_ssm");
  j["mamba_expand"] = int64_t{1} << 40;
  j["hidden_size"] = int64_t{1} << 40;
  expect_refused<models::FalconH1Config>(j, "mamba_expand * hidden_size overflows");
  j = ok;
  j["mamba_d_state"] = -3.0;
  expect_refused<models::FalconH1Config>(j, "'mamba_d_state' must be positive");
  j = ok;
  j["embedding_multiplier"] = std::numeric_limits<double>::infinity();  // JSON 1e400 parses to this
  expect_refused<models::FalconH1Config>(j, "must be a finite number");
}
