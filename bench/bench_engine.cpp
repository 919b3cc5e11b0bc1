// Engine benchmark: prefill and decode tokens/s for a model directory (or a preset written
// with random weights), with and without a random non-zero S0 state set, plus the GEMM
// throughput measured in the same run. Prints one JSON object.
//
//   bench_engine [--arch qwen35|falcon_h1|qwen2] --preset 0.8b --dtype bf16 [--threads 0] [--prompt-len 512] [--decode 64]
//   bench_engine --model DIR --dtype f32
#include <chrono>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "s0/models/init_model.h"
#include "s0/adapters/prefix.h"
#include "s0/models/model.h"
#include "s0/nn/linear.h"
#include "s0/util/error.h"
#include "bench_util.h"

using namespace s0;
using bench::Clock;
using bench::secs;

static double rss_gb() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1e6;
  return 0;
}

int main(int argc, char** argv) {
  std::string model_dir, preset, dtype = "bf16", cache_dir = "/tmp/s0-bench", arch = "qwen35";
  int threads = 0, prompt_len = 512, decode = 64, repeats = 3;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("missing value after " + a);
      return argv[++i];
    };
    if (a == "--model") model_dir = next();
    else if (a == "--preset") preset = next();
    else if (a == "--arch") arch = next();
    else if (a == "--dtype") dtype = next();
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--prompt-len") prompt_len = std::stoi(next());
    else if (a == "--decode") decode = std::stoi(next());
    else if (a == "--repeats") repeats = std::stoi(next());
    else if (a == "--cache-dir") cache_dir = next();
    else {
      std::fprintf(stderr, "usage: bench_engine (--model DIR | [--arch qwen35|falcon_h1|qwen2] --preset NAME) [--dtype bf16|f32] [--threads N]\n"
                           "       [--prompt-len 512] [--decode 64] [--repeats 3] [--cache-dir /tmp/s0-bench]\n");
      return 2;
    }
  }
  try {
    models::configure_runtime(threads);
    nlohmann::json out;
    if (model_dir.empty()) {
      if (preset.empty()) preset = "tiny";
      model_dir = cache_dir + "/" + arch + "-" + preset + "-" + dtype;
      if (double s = bench::ensure_preset_dir(model_dir, preset, dtype, arch); s > 0) out["init_model_seconds"] = s;
    }
    const auto st = models::parse_dtype(dtype);
    auto t0 = Clock::now();
    auto model = models::load_model(model_dir, st);
    out["load_seconds"] = secs(t0);
    out["model"] = model_dir;
    out["dtype"] = dtype;
    out["threads"] = at::get_num_threads();
    out["prompt_len"] = prompt_len;
    out["decode_tokens"] = decode;
    NoGrad ng;

    // GEMM throughput in the same run: [prompt_len, 1024] x [4096, 1024]^T in the model
    // dtype, through the model's own linear (nn::linear) and through at::linear.
    out["gemm_gflops"] = bench::gemm_gflops(prompt_len, 1024, 4096, st, [](auto& x, auto& w) { return nn::linear(x, w); });
    out["gemm_gflops_at_linear"] =
        bench::gemm_gflops(prompt_len, 1024, 4096, st, [](auto& x, auto& w) { return at::linear(x, w); });
    out["gemm_shape"] = {prompt_len, 1024, 4096};

    auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
    Tensor prompt = at::randint(0, std::min<int64_t>(model->vocab_size(), 240000), {1, prompt_len}, gen, at::kLong);
    // The adapter arm: a random S0 state set; on a model without recurrent layers (qwen2) a
    // random 30-token prefix instead (the paper's prefix-tuning control).
    models::StateMap states;
    for (auto l : model->recurrent_layers()) states[l] = at::randn(model->state_shape(), gen) * 0.07;
    const bool prefix = states.empty();
    std::shared_ptr<const models::Adapter> adapter = std::make_shared<models::InitialStates>(states);
    if (prefix) {
      const auto shape = adapters::prefix_shape(*model);
      adapter = adapters::prefix_adapter(shape, at::randn({30, shape.width()}, gen), model->attention_layers());
    }
    const std::string arm = prefix ? "prefix30" : "s0";

    // Base and S0 runs alternate (base, S0, base, S0, ...) so that machine noise hits both
    // alike; each reports the median over its runs.
    auto once = [&](std::shared_ptr<const models::Adapter> a, std::vector<double>& pre, std::vector<double>& dec) {
      auto cache = model->new_cache(1, std::move(a));
      auto t = Clock::now();
      Tensor tok = model->forward(prompt, cache, true).argmax(-1);
      pre.push_back(secs(t));
      t = Clock::now();
      for (int i = 0; i < decode; ++i) tok = model->forward(tok, cache, true).argmax(-1);
      dec.push_back(secs(t));
    };
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    };
    std::vector<double> pb, db, ps, ds;
    for (int r = 0; r < repeats; ++r) {
      once(nullptr, pb, db);
      once(adapter, ps, ds);
    }
    auto summary = [&](const std::vector<double>& pre, const std::vector<double>& dec) {
      return nlohmann::json{{"prefill_tokens_per_s", prompt_len / median(pre)},
                            {"decode_tokens_per_s", decode / median(dec)},
                            {"decode_ms_per_token", 1e3 * median(dec) / decode}};
    };
    out["repeats"] = repeats;
    out["base"] = summary(pb, db);
    out[arm] = summary(ps, ds);
    out[arm + "_over_base"] = {{"prefill", median(pb) / median(ps)}, {"decode", median(db) / median(ds)}};
    out["rss_gb"] = rss_gb();
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
