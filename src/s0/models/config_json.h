#pragma once
// One config.json value as T, for the family config readers. Integers written as floats
// (4096.0, as some exporters do) are accepted when whole and in range; any other float is
// refused (converting an out-of-range double to an integer is undefined behaviour, found by
// fuzz/fuzz_config.cpp). Other type mismatches surface as nlohmann's type errors, which the
// callers turn into "key has the wrong type". Torch-free.
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/util/error.h"

namespace s0::models {

template <typename T>
T config_value(const nlohmann::json& v, const char* key, const std::string& source) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!(std::isfinite(d) && d == std::floor(d) && d >= -9.0e18 && d <= 9.0e18))
        throw Error(source + ": key '" + key + "' must be an integer, found " + v.dump());
      return static_cast<T>(d);
    }
  }
  return v.get<T>();
}

}  // namespace s0::models

namespace s0::models {

// Sizes beyond every real model, refused before anything multiplies them: each dimension at
// most 2^24, at most 4096 layers, at most 10^14 parameters in all (products computed in
// double, so the check itself cannot overflow).
constexpr int64_t kMaxConfigDim = int64_t{1} << 24;
constexpr int64_t kMaxConfigLayers = 4096;
constexpr double kMaxConfigParameters = 1e14;

inline void check_config_dim(int64_t v, const char* key, const std::string& source, int64_t max = kMaxConfigDim) {
  if (v <= 0) throw Error(source + ": '" + key + "' must be positive, found " + std::to_string(v));
  if (v > max)
    throw Error(source + ": '" + key + "' = " + std::to_string(v) + " is larger than any real model's (limit " +
                std::to_string(max) + ")");
}

inline void check_config_finite(double v, const char* key, const std::string& source) {
  if (!std::isfinite(v)) throw Error(source + ": '" + key + "' must be a finite number");
}

// The number of parameters of a tensor table (TensorShape entries).
template <typename Shapes>
int64_t count_parameters(const Shapes& shapes) {
  int64_t n = 0;
  for (const auto& t : shapes) {
    int64_t p = 1;
    for (auto d : t.shape) p *= d;
    n += p;
  }
  return n;
}

template <typename Shapes>
void check_config_parameters(const Shapes& shapes, const std::string& source) {
  double n = 0;
  for (const auto& t : shapes) {
    double p = 1;
    for (auto d : t.shape) p *= static_cast<double>(d);
    n += p;
  }
  if (n > kMaxConfigParameters)
    throw Error(source + ": describes a model of " + std::to_string(n) + " parameters, more than any real model");
}

}  // namespace s0::models

namespace s0::models {

// config.json's `key` as T: missing or null is an error naming the file and key (config_req)
// or gives `dflt` (config_opt); a value of another type is "key has the wrong type".
template <typename T>
T config_req(const nlohmann::json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) throw Error(source + ": missing required key '" + key + "'");
  try {
    return config_value<T>(*it, key, source);
  } catch (const nlohmann::json::exception&) {
    throw Error(source + ": key '" + key + "' has the wrong type (" + it->type_name() + ")");
  }
}

template <typename T>
T config_opt(const nlohmann::json& j, const char* key, T dflt, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  try {
    return config_value<T>(*it, key, source);
  } catch (const nlohmann::json::exception&) {
    throw Error(source + ": key '" + key + "' has the wrong type (" + it->type_name() + ")");
  }
}

// The RoPE base of a config with plain RoPE: "rope_theta" (older configs, default `dflt`),
// overridden by "rope_parameters".rope_theta (HF v5); a rope type other than "default" and a
// non-null "rope_scaling" are refused naming the key.
inline double config_rope_theta(const nlohmann::json& j, double dflt, const std::string& source) {
  double theta = config_opt<double>(j, "rope_theta", dflt, source);
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const nlohmann::json& rp = j["rope_parameters"];
    const std::string type = config_opt<std::string>(rp, "rope_type", "default", source);
    if (type != "default")
      throw Error(source + ": rope_parameters.rope_type '" + type + "' is not supported (only 'default')");
    theta = config_opt<double>(rp, "rope_theta", theta, source);
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(source + ": 'rope_scaling' is not supported (expected null: YaRN/linear scaling is not implemented)");
  return theta;
}

// Appends node's "eos_token_id" (an integer or a list of integers; absent/null: nothing).
inline void config_eos_ids(const nlohmann::json& node, const std::string& source, std::vector<int64_t>& out) {
  auto it = node.find("eos_token_id");
  if (it == node.end() || it->is_null()) return;
  if (it->is_number_integer()) {
    out.push_back(it->get<int64_t>());
    return;
  }
  if (!it->is_array())
    throw Error(source + ": 'eos_token_id' must be an integer or a list of integers, found " + it->dump());
  for (const auto& x : *it) {
    if (!x.is_number_integer()) throw Error(source + ": 'eos_token_id' must hold integers, found " + x.dump());
    out.push_back(x.get<int64_t>());
  }
}

}  // namespace s0::models
