#pragma once
// Evaluate (METHOD.md section 4): greedy pass@1 (and sampled pass@k) on held-out problems for
// several conditions (base, a state set at several alphas); per-problem results JSONL,
// summary.json and report.md. Resumable: one durable append per finished problem.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/eval/checkers.h"
#include "s0/eval/prompt.h"
#include "s0/eval/tasks.h"
#include "s0/models/model.h"
#include "s0/pipeline/common.h"
#include "s0/text/tokenizer.h"

namespace s0::pipeline {

struct Condition {
  std::string name;                        // "base", "s0", "s0@0.15", ...
  std::optional<models::StateMap> states;  // none: the base model (or `adapter`)
  std::optional<double> alpha;             // recorded in the summary
  std::shared_ptr<const models::Adapter> adapter = nullptr;  // any adapter (LoRA, offset, stack), when no states
};

struct EvalOptions {
  int64_t max_new_tokens = 512;
  int64_t samples = 0;              // > 0: also sample n per problem for pass@k
  int64_t batch = 16;               // greedy problems decoded together (same tokens as one by one)
  std::vector<int64_t> ks = {1, 5, 10};
  SampleOptions sampling;           // for the sampled pass@k
  eval::CheckOptions check;
  bool progress = true;
  nlohmann::json meta = nlohmann::json::object();  // copied into summary.json (model, states, ...)
};

// Writes OUT_DIR/eval_config.json, OUT_DIR/results.jsonl, OUT_DIR/summary.json and
// OUT_DIR/report.md (report.h: evaluation_report); returns the summary. Lays the model's
// weights out for generation first (models::use_generation_layout).
nlohmann::json evaluate(models::CausalLM& model, const text::Tokenizer& tok, const eval::PromptStyle& style,
                        const std::vector<eval::Task>& tasks, const std::vector<Condition>& conditions,
                        const eval::Sandbox& sandbox, const EvalOptions& opt, const std::string& out_dir);

// Summary from per-problem result records (also used by experiments): per condition greedy
// pass@1, pass@k, and against the first condition ("base") the FAIL->PASS / PASS->FAIL flips
// with the first-character divergence of FAIL->PASS flips.
nlohmann::json summarize(const std::vector<nlohmann::json>& results, const std::vector<std::string>& condition_order,
                         const std::vector<int64_t>& ks);

}  // namespace s0::pipeline
