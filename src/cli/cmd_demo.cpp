// `s0 demo`: the main job on the built-in default (pipeline/demo.h): the whole S0 pipeline on
// the project's own small pretrained hybrid; prints base vs S0 with std and Welch's p, the
// state-set size and the decode speed with and without S0.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "commands.h"
#include "s0/pipeline/demo.h"
#include "s0/pipeline/report.h"

namespace s0::cli {

namespace fs = std::filesystem;

namespace {

// Where the built-in model may be: --assets, else $S0_ASSETS, else the source tree's assets/
// (compiled in), else <exe>/../assets.
std::vector<std::string> asset_dirs(const std::string& flag) {
  std::vector<std::string> tries;
  if (!flag.empty()) tries.push_back(flag);
  if (const char* e = std::getenv("S0_ASSETS")) tries.push_back(e);
#ifdef S0_ASSETS_DIR
  tries.push_back(S0_ASSETS_DIR);
#endif
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) tries.push_back((fs::path(std::string(buf, static_cast<size_t>(n))).parent_path().parent_path() / "assets").string());
  return tries;
}

}  // namespace

Action add_demo(CLI::App& app) {
  struct Opts : pipeline::DemoOptions {
    std::string assets_flag;
    bool no_baselines = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--out", o->out, "Working directory for the demo's files (rerun resumes)")->capture_default_str();
  app.add_option("--assets", o->assets_flag, "Folder holding builtin/model and builtin/tasks");
  app.add_option("--seeds", o->seeds, "Seeds (collect -> train -> eval each)")->capture_default_str();
  app.add_option("--train-problems", o->train_problems, "Use the first N training problems (0: all)");
  app.add_option("--eval-problems", o->eval_problems, "Use the first N held-out problems (0: all)");
  app.add_option("--samples", o->samples, "Completions sampled per training problem")->capture_default_str();
  app.add_option("--steps", o->steps, "S0 training steps")->capture_default_str();
  app.add_option("--alpha", o->alpha, "Inference scale of the states (default: the built-in model's)");
  app.add_option("--max-new-tokens", o->max_new_tokens, "New tokens per completion")->capture_default_str();
  app.add_option("--threads", o->threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  app.add_flag("--quick", o->quick, "A fast smoke run: 1 seed, 8 training and 10 held-out problems, 4 samples, 2 steps");
  app.add_flag("--unsafe-exec", o->unsafe_exec, "Run model code without bubblewrap when it is unavailable");
  app.add_flag("--no-baselines", o->no_baselines, "Only S0 (skip the LoRA and state-offset arms)");
  app.add_option("--train-subset", o->train_subset,
                 "Per seed, a seeded random subset of this many training problems (0: all)")
      ->capture_default_str();
  app.add_flag("--control", o->control,
               "Also run the paper's control: prefix tuning on the built-in pure Transformer, same protocol");
  app.add_option("--control-lr", o->control_lrs, "Control: prefix-tuning learning rate(s), one arm each")
      ->capture_default_str();
  app.add_option("--control-steps", o->control_steps, "Control: prefix-tuning steps (one example each)")
      ->capture_default_str();
  return [o]() {
    o->baselines = !o->no_baselines;
    o->assets = asset_dirs(o->assets_flag);
    auto r = pipeline::run_demo(*o);
    std::fputs(pipeline::demo_report(r.summary, r.path).c_str(), stdout);
    return 0;
  };
}

}  // namespace s0::cli
