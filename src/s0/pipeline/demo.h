#pragma once
// The demo (`s0 demo`): the whole S0 pipeline on the project's own small pretrained hybrid
// (assets/builtin, see tools/builtin/README.md): evaluate the base model on held-out problems,
// then over several seeds collect verified solutions on the training problems (sampled from
// the frozen model, executed in the sandbox), train a state set, evaluate it (an experiment,
// experiment.h); then measure the decode speed with and without S0. Writes OUT/tasks.jsonl,
// OUT/experiment/ and OUT/demo.json (base vs S0 with std and Welch's p, the state-set size, the
// decode speeds); report.h's demo_report() formats it. A rerun resumes.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace s0::pipeline {

struct DemoOptions {
  // Folders that may hold builtin/model and builtin/tasks, in order of preference: the first
  // holding builtin/model/config.json is used.
  std::vector<std::string> assets;
  std::string out = "out/demo";
  int threads = 0;  // intra-op threads (0 = all cores)
  int64_t seeds = 5;
  int64_t train_problems = 0, eval_problems = 0;  // the first N of each (0: all)
  int64_t samples = 16;                           // completions sampled per training problem
  int64_t steps = 20;                             // S0 training steps
  int64_t max_new_tokens = 128;
  double alpha = -1;   // < 0: the built-in model's (builtin.json)
  bool quick = false;  // 1 seed, 8 training and 10 held-out problems, 4 samples, 2 steps
  bool unsafe_exec = false;
};

struct DemoResult {
  nlohmann::json summary;  // what OUT/demo.json holds
  std::string path;        // OUT/demo.json
};

DemoResult run_demo(const DemoOptions& opt);

}  // namespace s0::pipeline
