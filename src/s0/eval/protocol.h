#pragma once
// The paper's data and evaluation protocol (METHOD.md section 4) on a loaded model:
//   collect   sample n completions per training problem from the frozen model (optionally
//             with a state set), verify each, keep at most k passing ones per problem, and
//             write them as training JSONL ({"prompt": rendered prompt, "completion": text}
//             plus provenance). Resumable: one durable append per finished problem.
//   evaluate  greedy pass@1 (and sampled pass@k) on held-out problems for several
//             conditions (base, a state set at several alphas); per-problem results JSONL,
//             summary.json and report.md. Resumable the same way.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/eval/checkers.h"
#include "s0/eval/tasks.h"
#include "s0/models/model.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"

namespace s0::eval {

// How a problem becomes the model's input. With a chat template: one user message (the
// instruction below + the problem), generation prompt on, thinking as set (METHOD.md: off).
// Without: HumanEval's prompt as is (plain completion), others the instruction text.
struct PromptStyle {
  const text::ChatTemplate* chat = nullptr;
  std::optional<bool> enable_thinking = false;
};
std::string instruction(const Task& t);
std::string render_prompt(const Task& t, const PromptStyle& style);

struct SampleOptions {
  int64_t max_new_tokens = 512;
  double temperature = 0.7, top_p = 0.95;
  int64_t top_k = 0;
  uint64_t seed = 0;
};

struct CollectOptions {
  int64_t samples = 16;  // per problem
  int64_t keep = 1;      // passing completions kept per problem
  SampleOptions sampling;
  CheckOptions check;
  // false: verification stops once `keep` solutions are found (same kept set, fewer runs;
  // passed_samples then counts only the samples checked).
  bool check_all = false;
  bool progress = true;
};

struct CollectSummary {
  int64_t problems = 0, solved = 0, kept = 0, samples = 0, checked = 0, passed_samples = 0;
  double seconds = 0;
  nlohmann::json to_json() const;
};

// Writes OUT (training JSONL) and OUT.progress.jsonl (one line per finished problem).
CollectSummary collect(models::CausalLM& model, const text::Tokenizer& tok, const PromptStyle& style,
                       const std::vector<Task>& tasks, const models::StateMap* states, const Sandbox& sandbox,
                       const CollectOptions& opt, const std::string& out_path);

struct Condition {
  std::string name;                 // "base", "s0", "s0@0.15", ...
  std::optional<models::StateMap> states;  // none: the base model
  std::optional<double> alpha;      // recorded in the summary
};

struct EvalOptions {
  int64_t max_new_tokens = 512;
  int64_t samples = 0;              // > 0: also sample n per problem for pass@k
  int64_t batch = 16;               // greedy problems decoded together (same tokens as one by one)
  std::vector<int64_t> ks = {1, 5, 10};
  SampleOptions sampling;           // for the sampled pass@k
  CheckOptions check;
  bool progress = true;
  nlohmann::json meta = nlohmann::json::object();  // copied into summary.json (model, states, ...)
};

// Writes OUT_DIR/results.jsonl, OUT_DIR/summary.json and OUT_DIR/report.md; returns the summary.
nlohmann::json evaluate(models::CausalLM& model, const text::Tokenizer& tok, const PromptStyle& style,
                        const std::vector<Task>& tasks, const std::vector<Condition>& conditions,
                        const Sandbox& sandbox, const EvalOptions& opt, const std::string& out_dir);

// Summary from per-problem result records (also used by experiments): per condition greedy
// pass@1, pass@k, and against the first condition ("base") the FAIL->PASS / PASS->FAIL flips
// with the first-character divergence of FAIL->PASS flips.
nlohmann::json summarize(const std::vector<nlohmann::json>& results, const std::vector<std::string>& condition_order,
                         const std::vector<int64_t>& ks);
std::string markdown_report(const nlohmann::json& summary);

}  // namespace s0::eval
