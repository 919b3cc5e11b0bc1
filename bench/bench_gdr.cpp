// Gated delta rule benchmark: forward + backward (gradients w.r.t. q, k, v, g, beta and the
// initial state, from a gradient on the output) of the chunked form on CPU float32, the
// hand-written fast path (gdr_fast) against libtorch autograd through the ATen chunked
// form, measured in the same run. Prints one JSON object.
//
//   bench_gdr [--only-fast 1] [--threads 2] [--B 1] [--H 16] [--L 512] [--K 128] [--V 128] [--C 64] [--repeats 10]
#include <algorithm>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "s0/nn/gated_delta_rule.h"
#include "s0/util/error.h"
#include "bench_util.h"

using namespace s0;
using bench::Clock;
using bench::secs;

int main(int argc, char** argv) {
  int64_t only_fast = 0, threads = 2, B = 1, H = 16, L = 512, K = 128, V = 128, C = 64, repeats = 10;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) throw Error("missing value after " + a);
    const int64_t x = std::stoll(argv[++i]);
    if (a == "--threads") threads = x;
    else if (a == "--only-fast") only_fast = x;
    else if (a == "--B") B = x;
    else if (a == "--H") H = x;
    else if (a == "--L") L = x;
    else if (a == "--K") K = x;
    else if (a == "--V") V = x;
    else if (a == "--C") C = x;
    else if (a == "--repeats") repeats = x;
    else throw Error("unknown option " + a);
  }
  if (!nn::gdr_fast_available()) throw Error("oneDNN sgemm not found: no fast path to measure");
  at::set_num_threads(int(threads));
  at::manual_seed(0);
  auto l2 = [](const Tensor& x) { return x / x.norm(2, -1, true); };
  Tensor q = l2(at::randn({B, H, L, K})) * (1.0 / std::sqrt(double(K)));
  Tensor k = l2(at::randn({B, H, L, K}));
  Tensor v = at::randn({B, H, L, V});
  Tensor g = -at::softplus(at::randn({B, H, L}) * 2.0 - 2.0);
  Tensor beta = at::sigmoid(at::randn({B, H, L}));
  Tensor s0 = at::randn({B, H, K, V}) * 0.1;
  Tensor wo = at::randn({B, H, L, V});
  std::vector<Tensor> in;
  for (const Tensor& t : {q, k, v, g, beta, s0}) in.push_back(t.clone().requires_grad_(true));

  auto step = [&](bool fast) {
    auto r = fast ? nn::gated_delta_rule_chunked_fast_grad(in[0], in[1], in[2], in[3], in[4], in[5], C)
                  : nn::gated_delta_rule_chunked_aten(in[0], in[1], in[2], in[3], in[4], in[5], C);
    return torch::autograd::grad({(r.out * wo).sum()}, in);
  };
  // The two interleaved, one call each per round (the machine's load drifts): best and
  // median over the rounds.
  auto timed = [&](bool fast) {
    auto t = Clock::now();
    step(fast);
    return secs(t);
  };
  auto stats = [](std::vector<double> xs) {
    std::sort(xs.begin(), xs.end());
    return nlohmann::json{{"best", xs.front()}, {"median", xs[xs.size() / 2]}};
  };
  if (only_fast) {  // for profiling the fast path alone
    std::vector<double> f;
    step(true);
    for (int64_t i = 0; i < repeats; ++i) f.push_back(timed(true));
    std::vector<double> fo;  // inference forward (no autograd), as in training's no-grad pass
    {
      NoGrad ng;
      nn::gated_delta_rule_chunked_fast(q, k, v, g, beta, s0, C);
      for (int64_t i = 0; i < repeats; ++i) {
        auto t = Clock::now();
        nn::gated_delta_rule_chunked_fast(q, k, v, g, beta, s0, C);
        fo.push_back(secs(t));
      }
    }
    std::printf("%s\n", nlohmann::json{{"fast_fwd_bwd_s", stats(f)}, {"fast_fwd_only_s", stats(fo)}}.dump().c_str());
    return 0;
  }
  step(true), step(false);  // warm-up
  std::vector<double> tf, ta;
  for (int64_t i = 0; i < repeats; ++i) tf.push_back(timed(true)), ta.push_back(timed(false));
  // Agreement of the two (sanity): max relative difference of the gradients.
  auto ga = step(true), gb = step(false);
  double max_rel = 0;
  for (size_t i = 0; i < ga.size(); ++i)
    max_rel = std::max(max_rel, (ga[i] - gb[i]).abs().max().item<double>() /
                                    std::max(gb[i].abs().max().item<double>(), 1e-30));
  // Forward only (no autograd) with the fast kernel, for scale.
  double fwd_best = 1e30;
  {
    NoGrad ng;
    for (int64_t i = 0; i <= repeats; ++i) {
      auto t = Clock::now();
      nn::gated_delta_rule_chunked_fast(q, k, v, g, beta, s0, C);
      if (i) fwd_best = std::min(fwd_best, secs(t));
    }
  }
  auto jf = stats(tf), ja = stats(ta);
  nlohmann::json j = {{"threads", threads}, {"B", B}, {"H", H}, {"L", L}, {"K", K}, {"V", V}, {"C", C},
                      {"repeats", repeats},
                      {"fast_fwd_bwd_s", jf},
                      {"aten_autograd_fwd_bwd_s", ja},
                      {"speedup_best", ja["best"].get<double>() / jf["best"].get<double>()},
                      {"speedup_median", ja["median"].get<double>() / jf["median"].get<double>()},
                      {"fast_fwd_only_s", fwd_best},
                      {"grad_max_rel_diff", max_rel}};
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}
