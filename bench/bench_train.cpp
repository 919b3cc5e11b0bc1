// Training benchmark: S0 training steps (forward + input-gradient backward for one example)
// on a model directory or preset, reporting tokens/s, FLOPs per step, model FLOPs
// utilisation against the GEMM throughput measured in the same run, and peak RSS.
//
//   bench_train [--arch qwen35|falcon_h1] --preset 0.8b --dtype bf16 --tokens 512 [--completion 256] [--steps 2]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <map>

#include <nlohmann/json.hpp>

#include "s0/models/init_model.h"
#include "s0/models/falcon_h1.h"
#include "s0/models/qwen35.h"
#include "s0/nn/linear.h"
#include "s0/train/trainer.h"
#include "s0/util/error.h"
#include "bench_util.h"
#include "op_profile.h"

using namespace s0;

static double peak_rss_gb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1e6;  // KiB -> GB
}

int main(int argc, char** argv) {
  std::string model_dir, preset = "0.8b", dtype = "bf16", cache_dir = "/tmp/s0-bench", arch = "qwen35";
  int threads = 0, tokens = 512, completion = -1, steps = 2;
  bool recompute = true, profile = false, keep_projections = true;
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
    else if (a == "--tokens") tokens = std::stoi(next());
    else if (a == "--completion") completion = std::stoi(next());
    else if (a == "--steps") steps = std::stoi(next());
    else if (a == "--no-recompute") recompute = false;
    else if (a == "--profile") profile = true;
    else if (a == "--recompute-projections") keep_projections = false;
    else {
      std::fprintf(stderr, "usage: bench_train (--model DIR | [--arch qwen35|falcon_h1] --preset NAME) [--dtype bf16|f32] [--tokens 512]\n"
                           "       [--completion N (default tokens/2)] [--steps 2] [--threads N] [--no-recompute | --recompute-projections]\n"
                           "       [--profile: one more step under the operator profiler, top ops by self time]\n");
      return 2;
    }
  }
  if (completion < 0) completion = tokens / 2;
  try {
    models::configure_runtime(threads);
    if (model_dir.empty()) {
      model_dir = cache_dir + "/" + arch + "-" + preset + "-" + dtype;
      bench::ensure_preset_dir(model_dir, preset, dtype, arch);
    }
    auto model = models::load_model(model_dir, models::parse_dtype(dtype));
    // FLOPs per token of the forward pass: GEMMs of every layer over all tokens, attention
    // scores/context, the chunked recurrence. Backward of input gradients only = the same
    // again (no weight gradients).
    int64_t vocab = 0, hidden = 0, inter = 0;
    double per_tok = 0;
    const double T = tokens;
    if (auto* q = dynamic_cast<models::Qwen35Model*>(model.get())) {
      const auto& c = q->config();
      vocab = c.vocab_size, hidden = c.hidden_size, inter = c.intermediate_size;
      const double D = c.hidden_size;
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        per_tok += 2 * D * c.intermediate_size * 3;
        if (c.is_linear(l)) {
          per_tok += 2 * D * (c.conv_dim() + c.linear_value_dim() + 2 * c.linear_num_value_heads) + 2 * c.linear_value_dim() * D;
          // chunked recurrence, chunk 64: ~ (4 K V + 2 C K + 2 C V) per head per token
          per_tok += c.linear_num_value_heads * (4.0 * c.linear_key_head_dim * c.linear_value_head_dim +
                                                 2.0 * 64 * (c.linear_key_head_dim + c.linear_value_head_dim));
        } else {
          const double hd = c.head_dim;
          per_tok += 2 * D * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads) + 2 * c.num_attention_heads * hd * D;
          per_tok += 2 * c.num_attention_heads * hd * T;  // scores + context, causal average T/2 each
        }
      }
    } else if (auto* f = dynamic_cast<models::FalconH1Model*>(model.get())) {
      const auto& c = f->config();
      vocab = c.vocab_size, hidden = c.hidden_size, inter = c.intermediate_size;
      const double D = c.hidden_size, hd = c.head_dim, Q = c.mamba_chunk_size;
      const double H = c.mamba_n_heads, P = c.mamba_d_head, N = c.mamba_d_state, G = c.mamba_n_groups;
      for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
        per_tok += 2 * D * c.intermediate_size * 3;                                    // MLP
        per_tok += 2 * D * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads);  // q k v o
        per_tok += 2 * c.num_attention_heads * hd * T;  // scores + context, causal average T/2 each
        per_tok += 2 * D * c.in_proj_dim() + 2.0 * c.mamba_d_ssm * D;                  // in/out_proj
        // chunked SSD: C B^T per group (2 Q N), per head the intra-chunk product (2 Q P),
        // the chunk state (2 P N) and the off-diagonal read (2 P N).
        per_tok += G * 2 * Q * N + H * (2 * Q * P + 4 * P * N);
      }
    } else {
      throw Error("bench_train: FLOP count implemented for qwen35 and falcon_h1 only");
    }

    auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
    train::Example ex;
    Tensor ids = at::randint(0, std::min<int64_t>(vocab, 240000), {tokens}, gen, at::kLong);
    for (int t = 0; t < tokens; ++t) ex.ids.push_back(ids[t].item<int64_t>()), ex.target.push_back(t >= tokens - completion);

    // GEMM throughput in the same run (the model's linear, model dtype).
    const auto st = models::parse_dtype(dtype);
    const double gemm = bench::gemm_gflops(tokens, hidden, inter, st,
                                           [](auto& x, auto& w) { return nn::linear(x, w); });
    const double D = hidden;
    const double fwd = per_tok * T + 2.0 * D * vocab * completion;
    const double flops = 2.0 * fwd;

    train::TrainConfig cfg;
    cfg.steps = steps;
    cfg.recompute = recompute;
    cfg.keep_projections = keep_projections;
    std::vector<double> times, ckpt;
    std::string out = cache_dir + "/bench-train-out";
    train::Trainer tr(*model, {ex}, cfg);
    tr.train(out, false, [&](const train::StepReport& r) {
      times.push_back(r.seconds - r.checkpoint_seconds);
      ckpt.push_back(r.checkpoint_seconds);
    });
    // The step's compute (forward + backward of the example, the optimizer); the checkpoint
    // write happens once per step whatever the number of examples, so it is reported apart.
    double best = *std::min_element(times.begin(), times.end());
    nlohmann::json prof;
    if (profile) {
      // One extra step under the profiler (its own timing is not part of the numbers above).
      namespace pf = torch::autograd::profiler;
      train::TrainConfig pc = cfg;
      pc.steps = 1;
      train::Trainer ptr(*model, {ex}, pc);
      pf::enableProfilerLegacy(
          torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU, /*shapes=*/true));
      ptr.train(out + "-profile", false, {});
      auto events = pf::disableProfilerLegacy();
      prof = {{"by_op", bench::op_profile(events, 30, false)}, {"by_op_and_shapes", bench::op_profile(events, 40, true)}};
    }
    nlohmann::json j = {{"model", model_dir},
                        {"model_type", model->model_type()},
                        {"dtype", dtype},
                        {"threads", at::get_num_threads()},
                        {"tokens", tokens},
                        {"completion_tokens", completion},
                        {"step_seconds", times},
                        {"checkpoint_seconds", ckpt},
                        {"tokens_per_s", tokens / best},
                        {"flops_per_step", flops},
                        {"achieved_gflops", flops / best / 1e9},
                        {"gemm_gflops", gemm},
                        {"mfu_vs_gemm", flops / best / 1e9 / gemm},
                        {"recompute", recompute},
                        {"keep_projections", recompute && keep_projections},
                        {"peak_rss_gb", peak_rss_gb()}};
    if (profile) j["profile_top_ops"] = prof;
    std::printf("%s\n", j.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
