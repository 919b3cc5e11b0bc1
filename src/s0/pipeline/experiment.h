#pragma once
// The paper's full protocol over seeds (METHOD.md section 4): the base model is evaluated
// once (greedy decoding is deterministic); then per seed: collect verified solutions on the
// training problems -> train a state set -> evaluate it (one or more alphas) on the held-out
// problems. Reports mean +- std over seeds, a two-sided Welch's t-test of each alpha against
// base, paired t-tests between alphas (same seeds, same states: paired runs), the
// first-character divergence of FAIL->PASS flips, and a Markdown report with SVG charts
// (report.h).
// Every stage resumes: rerunning the same config continues where a killed run stopped.
//
// Config (JSON; paths relative to the config file's folder):
// {
//   "model": "DIR", "tasks": "humaneval.jsonl", "task_kind": "humaneval", "db_dir": "",
//   "train_problems": "0-79", "eval_problems": "80-163", "seeds": [0, 1, 2],
//   "chat": true, "thinking": false, "dtype": "bf16", "threads": 0,
//   "unsafe_exec": false, "timeout": 10, "workers": 2,
//   "collect": {"samples": 16, "keep": 1, "temperature": 0.7, "top_p": 0.95, "top_k": 0, "max_new_tokens": 512},
//   "training": {"steps": 20, "lr": 1e-3, "l2": 5e-4, "clip": 1.0, "layers": "all", "max_length": 2048,
//                "normalize": false, "alpha_in_training": false},
//   "eval": {"alphas": [0.07], "max_new_tokens": 512, "samples": 0, "ks": [1, 5, 10]},
//   "out": "runs/exp"            (default: the config's name without .json, next to it)
// }
#include <string>

#include <nlohmann/json.hpp>

#include "s0/models/model.h"

namespace s0::pipeline {

// Reads and validates a config file (unknown keys are errors, naming the key).
nlohmann::json load_experiment_config(const std::string& path);

// Runs (or resumes) the experiment; returns the summary also written to OUT/summary.json.
// OUT/report.md, OUT/deltas.svg, OUT/alpha_sweep.svg are written too. `model` may be passed
// in already loaded (else it is loaded from the config).
nlohmann::json run_experiment(const nlohmann::json& config, models::CausalLM* model = nullptr);

}  // namespace s0::pipeline
