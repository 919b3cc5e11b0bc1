// The decode products alone: y = x W^T for a batch of M rows against bf16 (or f32) weights
// that do not fit in cache (a rotating set of 256 MB), through each kernel this machine has
// (the AMX tile kernel, the AVX-512 kernel) and through at::linear (oneDNN), in one run.
// Prints JSON: the streaming read bandwidth and, per M, ms per 256 MB pass, GB/s and GFLOP/s
// of each path; the AMX and AVX-512 kernels also on a copy of the weights on 2 MB pages
// (models::WeightArena, as models load them; the plain paths' weights are in the heap on
// 4 KB pages: this benchmark does not re-execute with the huge-page heap), the repeats
// interleaved across the paths. The streaming read is on 2 MB pages. The AVX-512 kernel on 2 MB
// pages also runs with the other row walk than this CPU's (nn::RowWalk: which weight rows are
// read together at a few batch rows; results the same), as avx512_huge_pages_one_row or
// avx512_huge_pages_blocked; and the experimental k-pair kernel (nn::DecodeKernel::kPairs: its
// own copy of the weights, on 2 MB pages either way) as pairs, and the same with the threads
// taking alternate chunks from one cursor (nn::set_split_rows(false)) as pairs_one_cursor.
//
//   bench_gemv [--threads 0] [--dtype bf16|f32] [--batches 1,4,16,32,64] [--mb 256]
//              [--shape 4096x1024] [--repeats 5]
#include <algorithm>
#include <functional>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>

#include "bench_util.h"
#include "s0/nn/linear.h"
#include "s0/models/model.h"
#include "s0/models/weights.h"

using namespace s0;
using bench::Clock;
using bench::secs;

using bench::int_list;
using bench::median;

int main(int argc, char** argv) {
  try {
    int threads = 0, repeats = 5;
    int64_t mb = 256, N = 4096, K = 1024;
    std::string dtype = "bf16";
    std::vector<int64_t> batches{1, 4, 16, 32, 64};
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw Error(a + ": missing value");
        return argv[++i];
      };
      if (a == "--threads") threads = std::stoi(next());
      else if (a == "--dtype") dtype = next();
      else if (a == "--batches") batches = int_list(next());
      else if (a == "--mb") mb = std::stoll(next());
      else if (a == "--repeats") repeats = std::stoi(next());
      else if (a == "--shape") {
        std::string s = next();
        const auto x = s.find('x');
        if (x == std::string::npos) throw Error("--shape: NxK");
        N = std::stoll(s.substr(0, x)), K = std::stoll(s.substr(x + 1));
      } else {
        std::fprintf(stderr,
                     "usage: bench_gemv [--threads N] [--dtype bf16|f32] [--batches 1,4,16,32,64] [--mb 256]\n"
                     "                  [--shape 4096x1024] [--repeats 5]\n");
        return 2;
      }
    }
    if (dtype != "bf16" && dtype != "f32") throw Error("--dtype: bf16 or f32");
    models::configure_runtime(threads);
    NoGrad ng;
    const auto st = dtype == "bf16" ? at::kBFloat16 : at::kFloat;
    const int64_t per = N * K * at::elementSize(st);
    const int64_t count = std::max<int64_t>(1, mb * (int64_t{1} << 20) / per);
    std::vector<Tensor> ws, ws_huge;
    for (int64_t i = 0; i < count; ++i) ws.push_back(at::randn({N, K}).to(st));
    // The same weights on 2 MB pages, as models load them (models::WeightArena).
    models::WeightArena arena;
    for (const Tensor& w : ws) ws_huge.push_back(arena.empty({N, K}, st).copy_(w));
    const double bytes = static_cast<double>(per) * count;

    nlohmann::json out;
    out["threads"] = at::get_num_threads();
    out["dtype"] = dtype;
    out["shape"] = {N, K};
    out["weight_mb"] = bytes / (1 << 20);
    out["amx_available"] = nn::amx_available();
    out["bandwidth_gbps"] = bench::stream_read_gbps();

    out["huge_page_mb"] = bench::proc_mb("/proc/self/smaps_rollup", "AnonHugePages");
    struct Path {
      std::string name;
      std::function<void(const Tensor&, const Tensor&)> run;
      bool huge = false;  // on the arena's copies (2 MB pages) instead of heap memory
    };
    std::vector<Path> paths;
    // Each decode kernel on the heap's weights and on the arena's copies.
    auto kernel = [&](const std::string& name, nn::DecodeKernel k, nn::RowWalk walk = nn::RowWalk::kAuto) {
      auto run = [k, walk](const Tensor& x, const Tensor& w) {
        nn::set_decode_kernel(k);
        nn::set_row_walk(walk);
        nn::gemv_rows(x, w);
      };
      if (walk == nn::RowWalk::kAuto) paths.push_back({name, run, false});
      paths.push_back({name + "_huge_pages" + (walk == nn::RowWalk::kAuto     ? ""
                                               : walk == nn::RowWalk::kOneRow ? "_one_row"
                                                                              : "_blocked"),
                       run, true});
    };
    if (st == at::kBFloat16 && nn::amx_available()) kernel("amx", nn::DecodeKernel::kAuto);
    kernel("avx512", nn::DecodeKernel::kAvx512);
    // The other row walk than this CPU's.
    const bool one_row = nn::auto_row_walk() == nn::RowWalk::kOneRow;
    out["row_walk"] = one_row ? "one_row" : "blocked";
    kernel("avx512", nn::DecodeKernel::kAvx512, one_row ? nn::RowWalk::kBlocked : nn::RowWalk::kOneRow);
    // The experimental k-pair kernel, once: it reads its own copy of the weights (on 2 MB
    // pages either way, made in the warm-up pass), so the heap/arena distinction is moot.
    if (st == at::kBFloat16 && K % 2 == 0)
      paths.push_back({"pairs",
                       [](const Tensor& x, const Tensor& w) {
                         nn::set_decode_kernel(nn::DecodeKernel::kPairs);
                         nn::gemv_rows(x, w);
                       },
                       true});
    // The same with the threads taking alternate chunks from one cursor (nn::set_split_rows).
    if (st == at::kBFloat16 && K % 2 == 0)
      paths.push_back({"pairs_one_cursor",
                       [](const Tensor& x, const Tensor& w) {
                         nn::set_decode_kernel(nn::DecodeKernel::kPairs);
                         nn::set_split_rows(false);
                         nn::gemv_rows(x, w);
                         nn::set_split_rows(true);
                       },
                       true});
    paths.push_back({"at_linear", [](const Tensor& x, const Tensor& w) { at::linear(x, w); }});

    for (int64_t M : batches) {
      Tensor x = at::randn({M, K}).to(st);
      nlohmann::json row;
      row["batch"] = M;
      // Repeats interleaved across the paths (a noisy machine drifts between them otherwise).
      std::vector<std::vector<double>> t(paths.size());
      for (int r = -1; r < repeats; ++r)  // r = -1: a warm-up pass
        for (size_t i = 0; i < paths.size(); ++i) {
          auto t0 = Clock::now();
          for (const auto& w : paths[i].huge ? ws_huge : ws) paths[i].run(x, w);
          if (r >= 0) t[i].push_back(secs(t0));
        }
      for (size_t i = 0; i < paths.size(); ++i) {
        const double s = median(t[i]);
        row[paths[i].name] = {{"ms", 1e3 * s}, {"gbps", bytes / s / 1e9}, {"gflops", 2.0 * M * bytes / at::elementSize(st) / s / 1e9}};
      }
      out["batches"].push_back(row);
    }
    nn::set_decode_kernel(nn::DecodeKernel::kAuto);
    nn::set_row_walk(nn::RowWalk::kAuto);
    nn::clear_pair_weights();
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gemv: %s\n", e.what());
    return 1;
  }
}
