#pragma once
// The paper's analyses (METHOD.md section 6) as tools. Each returns a JSON result; report.h
// formats it (analysis_section / analysis_chart) and write_analysis() writes DIR/NAME.json,
// NAME.svg and NAME.md. `s0 analyze` and `s0 experiment` ("analyses") call them.
//   persistence  per prompt position, KL(tuned || base) of the next-token distributions and,
//                per recurrent layer, ||S_t(tuned) - S_t(base)||_F, averaged over prompts;
//                an exponential fit of the KL curve and its half-life in tokens
//   divergence   for FAIL->PASS flips of any eval output: the first character (and token) at
//                which the tuned output differs from the base output; sign tests
//   probe        per recurrent layer, the recurrent state vs the residual stream at the last
//                prompt token as features for the base model's pass/fail: PCA, logistic
//                regression, k-fold cross-validated AUC with a 95% interval (probe_math.h)
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/models/model.h"
#include "s0/pipeline/probe_math.h"
#include "s0/text/tokenizer.h"

namespace s0::pipeline {

// ------------------------------------------------------------------ persistence

// Every prompt is run token by token through one decode step holding two sequences: the base
// model and the same model carrying `tuned` (one weight pass for both). Position t is the
// distribution after prompt token t (t = 0: the first token). max_positions > 0 stops each
// prompt after that many tokens. The fit uses the positions reached by at least half the
// prompts. JSON: prompts, kl[t], kl_count[t], kl_first, kl_last_prompt_token,
// kl_last_over_first, fit {a, b, half_life_tokens, r2, points} or null, layers[{layer,
// initial_norm, diff_norm[t], last, last_over_initial}].
nlohmann::json persistence(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                           std::shared_ptr<const models::Adapter> tuned, int64_t max_positions = 0);

// ------------------------------------------------------------------ divergence

// One evaluation's per-problem records (results.jsonl lines: condition, task_id, passed,
// completion, and token_ids when written by this version), the base condition among them.
struct EvalRun {
  std::string label;  // "" for a single evaluation; "seed_0", ... for an experiment
  std::vector<nlohmann::json> records;
};
// Reads an eval output: a results.jsonl file, a folder holding one (`s0 eval --out`), or an
// experiment folder (base/results.jsonl + seed_*/eval/results.jsonl: one run per seed).
std::vector<EvalRun> read_eval_output(const std::string& path);

// Per condition other than `base`, over all runs: FAIL->PASS and PASS->FAIL counts, the sign
// test FAIL->PASS vs PASS->FAIL, and for the FAIL->PASS flips the first differing character
// (and token: the records' token_ids, else `tok` re-encoding the completions, else none)
// with a histogram, the share at position 0 and the sign test "at 0" vs "later".
nlohmann::json divergence(const std::vector<EvalRun>& runs, const text::Tokenizer* tok, const std::string& base = "base");

// ------------------------------------------------------------------ probe

// Base-model features at the last prompt token, per recurrent layer: the recurrent state
// (flattened, float32) and the residual stream after that layer ([n, D]).
struct ProbeFeatures {
  std::vector<int64_t> layers;
  std::vector<Tensor> state, residual;  // per layer: [n, state numel], [n, D]
};
ProbeFeatures probe_features(models::CausalLM& model, const std::vector<std::vector<int64_t>>& prompts);
// Cross-validated AUC per layer and feature kind. JSON: samples, positives, negatives, folds,
// pca_dims, l2, layers[{layer, state {auc, lo, hi, se, fold_auc_mean, fold_auc_std, dims},
// residual {...}}], best_state, best_residual (layer of the highest AUC).
nlohmann::json probe(const ProbeFeatures& f, const std::vector<int>& labels, const ProbeOptions& opt);

// ------------------------------------------------------------------ files

// Writes DIR/NAME.json (the result), DIR/NAME.svg (analysis_chart) and DIR/NAME.md
// (analysis_section, referring to NAME.svg); returns the Markdown.
std::string write_analysis(const std::string& dir, const std::string& name, const nlohmann::json& result);

}  // namespace s0::pipeline
