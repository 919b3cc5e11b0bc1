#pragma once
// The paper's full protocol over seeds (METHOD.md sections 3-4): the base model is evaluated
// once (greedy decoding is deterministic); then per seed: collect verified solutions on the
// training problems -> train every method on that same data (S0, and the baselines: LoRA,
// state offset) -> evaluate each (S0 at one or more alphas, offsets at one or more scales)
// on the held-out problems. Reports per condition mean +- std over seeds, a two-sided Welch's
// t-test against base, paired t-tests between conditions (same seeds, same data), per-seed
// exact McNemar, FAIL->PASS / PASS->FAIL with the first-character divergence, parameter
// counts, file sizes, training time and single-stream decode tokens/s with each adapter
// attached; a Markdown report with SVG charts (report.h).
// Every stage resumes: rerunning the same config continues where a killed run stopped.
//
// Config (JSON; paths relative to the config file's folder):
// {
//   "model": "DIR", "tasks": "humaneval.jsonl", "task_kind": "humaneval", "db_dir": "",
//   "train_problems": "0-79", "eval_problems": "80-163", "seeds": [0, 1, 2],
//   "train_subset": 0,           (> 0: per seed, a seeded random subset of that many training problems)
//   "chat": true, "thinking": false, "dtype": "bf16", "threads": 0,
//   "unsafe_exec": false, "timeout": 10, "workers": 2,
//   "collect": {"samples": 16, "keep": 1, "temperature": 0.7, "top_p": 0.95, "top_k": 0, "max_new_tokens": 512},
//   "training": {"steps": 20, "lr": 1e-3, "l2": 5e-4, "clip": 1.0, "layers": "all", "max_length": 2048,
//                "normalize": false, "alpha_in_training": false},
//   "eval": {"alphas": [0.07], "max_new_tokens": 512, "samples": 0, "ks": [1, 5, 10]},
//   "methods": [                 (default: [{"name": "s0", "kind": "s0"}])
//     {"name": "s0", "kind": "s0", "alphas": [0.07]},
//     {"name": "lora", "kind": "lora", "rank": 24, "lora_alpha": 48, "targets": null,
//      "lr": 5e-4, "steps": 50, "batch": 1},
//     {"name": "offset", "kind": "offset", "scales": [1.0]},
//     {"name": "prefix", "kind": "prefix", "virtual_tokens": 30, "prefix_projection": true,
//      "encoder_hidden_size": 0}   (PEFT prefix tuning; any model with attention layers)
//   ],                           (each may override steps, lr, l2, clip, batch, layers, max_length;
//                                 the baselines' l2 defaults to 0; lora's steps/lr/batch default to
//                                 the paper's 50 / 5e-4 (Falcon-H1: 1e-4) / 1, not "training"; "examples": N > 0 trains on a
//                                 seeded random N of the seed's collected examples, nested across N)
//   "decode_speed_tokens": 128,  (0: skip the decode-speed measurement)
//   "analyses": {                (optional; analysis.h, on the held-out prompts, written to OUT/analysis/
//     "persistence": {"prompts": 16, "max_positions": 0},   and appended to report.md; `true` = defaults;
//     "divergence": true,                                  may be added to a finished experiment)
//     "probe": {"folds": 5, "pca_dims": 64, "l2": 1.0, "seed": 0}},
//   "out": "runs/exp"            (default: the config's name without .json, next to it)
// }
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/models/model.h"

namespace s0::pipeline {

// Reads and validates a config file (unknown keys are errors, naming the key).
nlohmann::json load_experiment_config(const std::string& path);
// The same for a config given as JSON (the Python module's dicts): relative paths are resolved
// against `base_dir`, errors name `origin`, and a missing "out" becomes `default_out` (an
// error when that is empty).
nlohmann::json experiment_config_from_json(const nlohmann::json& config, const std::string& base_dir,
                                           const std::string& origin, const std::string& default_out = "");

// Runs (or resumes) the experiment; returns the summary also written to OUT/summary.json.
// OUT/report.md, OUT/methods.svg, OUT/deltas.svg, OUT/alpha_sweep.svg are written too. `model` may be passed
// in already loaded (else it is loaded from the config).
nlohmann::json run_experiment(const nlohmann::json& config, models::CausalLM* model = nullptr);

// Ablations with the experiment machinery: kind "layers" trains S0 on the early / middle / late
// thirds of the recurrent layers and on all of them; kind "size" on `sizes` collected solutions
// per seed ("examples"). The arms are the S0 methods of one experiment (same seeds, collected
// data and held-out problems; the config's first alpha) in OUT/ablation_<kind>/ (resumable),
// which also gets ablation_<kind>.{json,svg,md} (report.h). Returns the table's data.
nlohmann::json run_ablation(const nlohmann::json& config, const std::string& kind, const std::vector<int64_t>& sizes,
                            models::CausalLM* model = nullptr);

}  // namespace s0::pipeline
