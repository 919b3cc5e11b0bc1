#include <chrono>
#include <cstdio>
#include <memory>

#include "commands.h"
#include "s0/models/init_model.h"
#include "s0/util/error.h"

namespace s0::cli {

Action add_init_model(CLI::App& app) {
  struct Opts {
    std::string arch = "qwen35", preset = "tiny", dtype = "bf16", out;
    uint64_t seed = 0;
    double shard_gb = 0;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--arch", o->arch, "Model family")->check(CLI::IsMember({"qwen35", "falcon_h1", "qwen2"}))->capture_default_str();
  app.add_option("--preset", o->preset, "Size: tiny, 0.8b, 2b, 4b, 9b (qwen35); tiny, 0.5b, 1.5b, 7b (falcon_h1); tiny, 0.5b, 1.5b, 3b, 7b (qwen2)")->capture_default_str();
  app.add_option("--seed", o->seed, "Random seed")->capture_default_str();
  app.add_option("--dtype", o->dtype, "Stored weight dtype")->check(CLI::IsMember({"bf16", "f32"}))->capture_default_str();
  app.add_option("--shard-gb", o->shard_gb, "Shard the weights into files of at most this many GB (0: one file)")
      ->capture_default_str();
  app.add_option("--out", o->out, "Output directory")->required();
  return [o]() {
    auto t0 = std::chrono::steady_clock::now();
    models::InitOptions opt;
    opt.seed = o->seed;
    opt.dtype = o->dtype;
    opt.shard_bytes = static_cast<uint64_t>(o->shard_gb * 1e9);
    const int64_t params = models::write_random_model(o->out, o->arch, o->preset, opt);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{\"out\": \"%s\", \"arch\": \"%s\", \"preset\": \"%s\", \"dtype\": \"%s\", "
                "\"parameters\": %lld, \"seconds\": %.2f}\n",
                o->out.c_str(), o->arch.c_str(), o->preset.c_str(), o->dtype.c_str(),
                static_cast<long long>(params), s);
    return 0;
  };
}

}  // namespace s0::cli
