#pragma once
// The demo (`s0 demo`): the whole S0 pipeline on the project's own small pretrained hybrid
// (assets/builtin, see tools/builtin/README.md): evaluate the base model on held-out problems,
// then over several seeds collect verified solutions on the training problems (sampled from
// the frozen model, executed in the sandbox), train a state set, evaluate it (an experiment,
// experiment.h), and the paper's baselines (LoRA, state offset) on the same data; with the
// decode speed of each. Writes OUT/tasks.jsonl, OUT/experiment/ and OUT/demo.json (base vs S0
// with std and Welch's p, the state-set size, the decode speeds, every arm side by side; with
// `control`, prefix tuning on the built-in pure Transformer over the same protocol);
// report.h's demo_report() formats it. A rerun resumes.
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
  bool baselines = true;      // also train and evaluate LoRA and the state offset on the same data
  // Per seed, a seeded random subset of this many training problems (0: all 80): the seeds
  // then learn from different problems, so their results genuinely vary.
  int64_t train_subset = 8;
  // The paper's control (METHOD.md section 3): the same protocol on the built-in pure
  // Transformer (builtin/control: Qwen2 architecture, same corpus, tokenizer and about the
  // same size) with PEFT prefix tuning (30 virtual tokens, projection MLP) in place of S0,
  // one arm per learning rate. Written to OUT/control/, summarised under "control".
  bool control = false;
  std::vector<double> control_lrs = {1e-3};
  int64_t control_steps = 50;  // the baselines' schedule: one example per step
};

struct DemoResult {
  nlohmann::json summary;  // what OUT/demo.json holds
  std::string path;        // OUT/demo.json
};

DemoResult run_demo(const DemoOptions& opt);

}  // namespace s0::pipeline
