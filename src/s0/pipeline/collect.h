#pragma once
// Collect (METHOD.md section 4): sample n completions per training problem from the frozen
// model (optionally with a state set), verify each, keep at most k passing ones per problem,
// and write them as training JSONL ({"prompt": rendered prompt, "completion": text} plus
// provenance). Resumable: one durable append per finished problem.
#include <cstdint>
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

struct CollectOptions {
  int64_t samples = 16;  // per problem
  int64_t keep = 1;      // passing completions kept per problem
  SampleOptions sampling;
  eval::CheckOptions check;
  // false: verification stops once `keep` solutions are found (same kept set, fewer runs;
  // passed_samples then counts only the samples checked).
  bool check_all = false;
  bool progress = true;
  // Problems sampled together (their samples decoded as one batch); 0: as many as fit in
  // kCollectBatchRows sequences whose states fit in kCollectStateBytes (at least one).
  // Never changes a result, only the speed and the memory.
  int64_t batch = 0;
};

// Decode rows a collect keeps busy by default (4 problems of 16 samples): a batch-64 step
// decodes ~1.8x the tokens per second of a batch-16 one (docs/performance.md); and the most
// f32 recurrent state those rows may hold (Qwen3.5-0.8B: 18.9 MB per sequence).
constexpr int64_t kCollectBatchRows = 64;
constexpr double kCollectStateBytes = 2e9;

struct CollectSummary {
  int64_t problems = 0, solved = 0, kept = 0, samples = 0, checked = 0, passed_samples = 0;
  double seconds = 0;
  // How the weights were laid out ("pairs" or "rows", models::use_generation_layout): the
  // decode kernel's rounding depends on it.
  std::string weight_layout = "rows";
  nlohmann::json to_json() const;
};

// Writes OUT (training JSONL), OUT.config.json (the settings) and OUT.progress.jsonl (one
// line per finished problem). Lays the model's weights out for generation first
// (models::use_generation_layout; the trainers lay them back).
CollectSummary collect(models::CausalLM& model, const text::Tokenizer& tok, const eval::PromptStyle& style,
                       const std::vector<eval::Task>& tasks, const models::StateMap* states,
                       const eval::Sandbox& sandbox, const CollectOptions& opt, const std::string& out_path);

}  // namespace s0::pipeline
