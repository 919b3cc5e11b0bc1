#pragma once
// Shared by the benchmark programs: timing, the model directory for a preset, and the GEMM
// throughput measured in the same run (for ratios such as MFU).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "s0/models/init_model.h"
#include "s0/models/model.h"
#include "s0/models/weights.h"
#include "s0/nn/linear.h"
#include "s0/util/error.h"
#include "s0/util/huge_pages.h"

namespace s0::bench {

using Clock = std::chrono::steady_clock;

inline double secs(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

// The median (the mean of the middle two for an even count; 0 for none).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// A "Key:   N kB" line of a /proc file (/proc/self/status VmRSS, /proc/self/smaps_rollup
// AnonHugePages), in MB; 0 when absent.
inline double proc_mb(const char* path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / 1024.0;
  return 0;
}

// For a benchmark's main(): `--huge-pages 0` among the arguments turns transparent huge
// pages off for this run (S0_HUGE_PAGES=0); otherwise the process re-executes itself once
// with the huge-page heap, as the s0 binary does (util/huge_pages.h).
inline void huge_pages_from_args(int argc, char** argv) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--huge-pages" && std::string(argv[i + 1]) == "0") ::setenv("S0_HUGE_PAGES", "0", 1);
  util::enable_huge_page_heap(argv);
}

// "1,4,16" -> {1, 4, 16}.
inline std::vector<int64_t> int_list(const std::string& s) {
  std::vector<int64_t> out;
  for (size_t p = 0; p < s.size();) {
    const size_t q = s.find(',', p);
    out.push_back(std::stoll(s.substr(p, q - p)));
    p = q == std::string::npos ? s.size() : q + 1;
  }
  return out;
}

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

// What one decode step must read and compute per row: every projection weight and the LM
// head (tied or not, [vocab, hidden]); 2 FLOPs per weight per row. Attention over the context
// and the recurrences are left out (small at short contexts).
inline int64_t decode_params(const models::CausalLM& model) {
  const auto linears = model.linear_layers();
  int64_t params = model.vocab_size() * nn::in_features(linears.at(0).second);
  for (const auto& [name, w] : linears) params += w.numel();
  return params;
}

// A decode step's lower bounds from the two rooflines: reading `bytes` at `bw_gbps`, and
// `rows` x `flops_per_row` at the GEMM rate. A step of step_s seconds reaches mem_s / step_s
// of the bandwidth, gemm_s / step_s of the GEMM rate, and roof_s() / step_s of the roofline.
struct StepBounds {
  double mem_s, gemm_s;
  double roof_s() const { return std::max(mem_s, gemm_s); }
};
inline StepBounds step_bounds(double bytes, double rows, double flops_per_row, double bw_gbps, double gemm_gflops) {
  return {bytes / (bw_gbps * 1e9), rows * flops_per_row / (gemm_gflops * 1e9)};
}

// ---- the machine's streaming read bandwidth (the decode roofline) ---------------------------

namespace detail {
// Sum of 64-bit words [p, p + n): reads every byte once; AVX-512 loads where the CPU has
// them (a plain loop otherwise; compilers vectorise it with the baseline ISA).
__attribute__((target("avx512f"))) inline uint64_t sum_words_avx512(const uint64_t* p, int64_t n) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(p + i));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(p + i + 8));
    a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(p + i + 16));
    a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(p + i + 24));
  }
  uint64_t s = _mm512_reduce_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  for (; i < n; ++i) s += p[i];
  return s;
}
inline uint64_t sum_words(const uint64_t* p, int64_t n) {
  if (__builtin_cpu_supports("avx512f")) return sum_words_avx512(p, n);
  uint64_t s = 0;
  for (int64_t i = 0; i < n; ++i) s += p[i];
  return s;
}
}  // namespace detail

// Read bandwidth in GB/s (1e9 bytes/s) of a streaming sum over `bytes` (much larger than
// the caches) on libtorch's intra-op threads, each reading its own contiguous share, as the
// decode kernels do. The buffer is placed as model weights are (models::WeightArena: 2 MB
// pages unless turned off), so the roofline is that of the memory the weights are in. One
// probe can be passed again and again, e.g. next to each timed repeat of a benchmark, so
// that a noisy machine's drift hits both alike.
class StreamProbe {
 public:
  explicit StreamProbe(int64_t bytes = int64_t(1) << 30) : n_(bytes / 8) {
    t_buf_ = arena_.empty({n_}, at::kLong);
    buf_ = reinterpret_cast<uint64_t*>(t_buf_.data_ptr<int64_t>());
    at::parallel_for(0, n_, 1 << 16, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) buf_[i] = static_cast<uint64_t>(i);
    });
  }
  // One pass: GB/s.
  double pass() {
    std::vector<uint64_t> part(static_cast<size_t>(at::get_num_threads()) + 1, 0);
    auto t = Clock::now();
    at::parallel_for(0, n_, 1 << 16, [&](int64_t a, int64_t b) {
      part[static_cast<size_t>(at::get_thread_num())] += detail::sum_words(buf_ + a, b - a);
    });
    const double s = secs(t);
    for (uint64_t v : part) sink_ = sink_ + v;
    return 8.0 * n_ / s / 1e9;
  }
  // The best of `passes` passes after one warm-up pass.
  double best_of(int passes) {
    pass();
    double best = 0;
    for (int i = 0; i < passes; ++i) best = std::max(best, pass());
    return best;
  }

 private:
  int64_t n_;
  models::WeightArena arena_;
  Tensor t_buf_;
  uint64_t* buf_ = nullptr;
  volatile uint64_t sink_ = 0;
};

// The best of `passes` passes of a fresh probe after one warm-up pass.
inline double stream_read_gbps(int64_t bytes = int64_t(1) << 30, int passes = 5) {
  return StreamProbe(bytes).best_of(passes);
}

}  // namespace s0::bench
