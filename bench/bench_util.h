#pragma once
// Shared by the benchmark programs: timing, the model directory for a preset, and the GEMM
// throughput measured in the same run (for ratios such as MFU).
#include <chrono>
#include <filesystem>
#include <string>

#include "s0/models/init_model.h"
#include "s0/models/model.h"
#include "s0/nn/linear.h"
#include "s0/util/error.h"

namespace s0::bench {

using Clock = std::chrono::steady_clock;

inline double secs(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

// CACHE/ARCH-PRESET-DTYPE, written with random weights when absent. Returns the seconds
// spent writing it (0 when it already existed). arch: "qwen35" | "falcon_h1".
inline double ensure_preset_dir(const std::string& dir, const std::string& preset, const std::string& dtype,
                                const std::string& arch = "qwen35") {
  if (std::filesystem::exists(dir + "/config.json")) return 0;
  auto t0 = Clock::now();
  models::InitOptions opt;
  opt.dtype = dtype;
  models::write_random_model(dir, arch, preset, opt);  // arch: qwen35, falcon_h1 or qwen2
  return secs(t0);
}

// GFLOP/s of [M, K] x [N, K]^T in `dtype` through `linear` (at least 1 s and 3 calls).
template <typename Linear>
double gemm_gflops(int64_t M, int64_t K, int64_t N, at::ScalarType dtype, Linear&& linear) {
  NoGrad ng;
  Tensor x = at::randn({M, K}).to(dtype), w = at::randn({N, K}).to(dtype);
  linear(x, w);
  int it = 0;
  auto t = Clock::now();
  while (secs(t) < 1.0 || it < 3) linear(x, w), ++it;
  return 2.0 * M * K * N * it / secs(t) / 1e9;
}

}  // namespace s0::bench
