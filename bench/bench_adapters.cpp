// Adapter benchmark: what each method costs per generated token and per training step, in
// one run on one model. Decode tokens/s (single stream, greedy) for the base model, an S0
// state set, a state offset, LoRA applied unmerged, and LoRA merged into the weights; the
// runs interleave (base, s0, offset, lora, merged, base, ...) so that machine noise hits all
// alike, and each reports its median. Then one training step (forward + backward on one
// example) per method. Prints one JSON object.
//
//   bench_adapters [--arch qwen35|falcon_h1] --preset 0.8b --dtype bf16 [--threads 0]
//                  [--prompt-len 64] [--decode 64] [--train-len 512] [--rank 24] [--repeats 3]
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "s0/adapters/lora.h"
#include "s0/adapters/state_offset.h"
#include "s0/models/model.h"
#include "s0/train/baselines.h"
#include "s0/train/trainer.h"
#include "s0/util/error.h"
#include "bench_util.h"

using namespace s0;
using bench::Clock;
using bench::secs;

int main(int argc, char** argv) {
  std::string preset = "tiny", dtype = "bf16", cache_dir = "/tmp/s0-bench", arch = "qwen35";
  int threads = 0, prompt_len = 64, decode = 64, repeats = 3, train_len = 512, rank = 24;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error("missing value after " + a);
      return argv[++i];
    };
    if (a == "--preset") preset = next();
    else if (a == "--arch") arch = next();
    else if (a == "--dtype") dtype = next();
    else if (a == "--threads") threads = std::stoi(next());
    else if (a == "--prompt-len") prompt_len = std::stoi(next());
    else if (a == "--decode") decode = std::stoi(next());
    else if (a == "--train-len") train_len = std::stoi(next());
    else if (a == "--rank") rank = std::stoi(next());
    else if (a == "--repeats") repeats = std::stoi(next());
    else if (a == "--cache-dir") cache_dir = next();
    else {
      std::fprintf(stderr, "usage: bench_adapters [--arch qwen35|falcon_h1] [--preset NAME] [--dtype bf16|f32] [--threads N]\n"
                           "       [--prompt-len 64] [--decode 64] [--train-len 512] [--rank 24] [--repeats 3]\n");
      return 2;
    }
  }
  try {
    models::configure_runtime(threads);
    nlohmann::json out;
    const std::string model_dir = cache_dir + "/" + arch + "-" + preset + "-" + dtype;
    if (double s = bench::ensure_preset_dir(model_dir, preset, dtype, arch); s > 0) out["init_model_seconds"] = s;
    const auto st = models::parse_dtype(dtype);
    auto model = models::load_model(model_dir, st);
    out["model"] = model_dir;
    out["dtype"] = dtype;
    out["threads"] = at::get_num_threads();

    // The adapters: random non-zero values of realistic size.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
    models::StateMap states, offsets;
    for (auto l : model->recurrent_layers()) {
      states[l] = at::randn(model->state_shape(), gen) * 0.07;
      offsets[l] = at::randn(model->state_shape(), gen) * 0.01;
    }
    auto s0 = std::make_shared<models::InitialStates>(states);
    auto offset = adapters::offset_adapter(model->recurrent_arch(), offsets);
    adapters::LoraConfig lc;
    lc.r = rank;
    lc.lora_alpha = 2.0 * rank;
    auto lora = adapters::init_lora(*model, lc, 1);
    for (auto& [name, f] : lora.modules) f.B = at::randn(f.B.sizes(), gen) * 0.01;
    auto lora_adapter = lora.adapter();
    // LoRA merged: a second copy of the model with W += scale * B A in place.
    auto merged = models::load_model(model_dir, st);
    {
      NoGrad ng;
      for (auto& [name, w] : merged->linear_layers())
        if (lora.modules.count(name)) {
          const auto& f = lora.modules.at(name);
          Tensor m = (w.to(at::kFloat) + at::matmul(f.B, f.A) * lc.scale()).to(w.scalar_type());
          Tensor target = w;  // shares the model's storage
          target.copy_(m);
        }
    }
    out["lora"] = {{"rank", rank}, {"modules", lora.modules.size()}, {"params", lora.num_params()}};
    out["offset_params"] = static_cast<int64_t>(offsets.size()) * states.begin()->second.numel();

    Tensor prompt = at::randint(0, std::min<int64_t>(model->vocab_size(), 240000), {1, prompt_len}, gen, at::kLong);
    NoGrad ng;
    auto once = [&](models::CausalLM& m, std::shared_ptr<const models::Adapter> a) {
      auto cache = m.new_cache(1, std::move(a));
      Tensor tok = m.forward(prompt, cache, true).argmax(-1).view({1});
      auto t = Clock::now();
      for (int i = 0; i < decode; ++i) tok = m.decode_step(tok, {&cache}).argmax(-1);
      return secs(t);
    };
    struct Arm {
      const char* name;
      models::CausalLM* m;
      std::shared_ptr<const models::Adapter> a;
      std::vector<double> t;
    };
    std::vector<Arm> arms = {{"base", model.get(), nullptr, {}},
                             {"s0", model.get(), s0, {}},
                             {"offset", model.get(), offset, {}},
                             {"lora_unmerged", model.get(), lora_adapter, {}},
                             {"lora_merged", merged.get(), nullptr, {}}};
    for (int r = 0; r < repeats; ++r)
      for (auto& arm : arms) arm.t.push_back(once(*arm.m, arm.a));
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double base = median(arms[0].t);
    nlohmann::json dec;
    for (auto& arm : arms)
      dec[arm.name] = {{"tokens_per_s", decode / median(arm.t)}, {"ms_per_token", 1e3 * median(arm.t) / decode},
                       {"over_base", base / median(arm.t)}};
    out["decode"] = dec;
    out["decode_tokens"] = decode;
    out["repeats"] = repeats;

    // One training step per method on one example of train_len tokens (half completion).
    if (train_len > 0) {
      train::Example ex;
      Tensor ids = at::randint(0, std::min<int64_t>(model->vocab_size(), 240000), {train_len}, gen, at::kLong);
      for (int i = 0; i < train_len; ++i) ex.ids.push_back(ids[i].item<int64_t>()), ex.target.push_back(i >= train_len / 2);
      train::TrainConfig tc;
      tc.steps = 1;
      const std::string dir = cache_dir + "/bench_adapters_train";
      nlohmann::json tr;
      at::AutoGradMode on(true);
      for (const char* method : {"s0", "lora", "offset"}) {
        std::filesystem::remove_all(dir);
        auto t = Clock::now();
        if (std::string(method) == "s0") train::Trainer(*model, {ex}, tc).train(dir, false);
        else if (std::string(method) == "lora") train::train_lora(*model, {ex}, tc, lc, dir, false);
        else train::train_offset(*model, {ex}, tc, dir, false);
        tr[method] = {{"step_seconds", secs(t)}};
      }
      std::filesystem::remove_all(dir);
      out["train_step"] = tr;
      out["train_len"] = train_len;
    }
    std::printf("%s\n", out.dump(2).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
