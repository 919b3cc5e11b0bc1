#pragma once
// `s0 collect` and `s0 eval` as library calls: the settings the CLI takes, and one function
// each that does what the subcommand does (read the tasks, set up the sandbox, load the model
// and tokenizer unless one is given, pick the problems, build the conditions, run, return the
// summary the CLI prints). The CLI and the Python module both call these, so both give the
// same files and summaries for the same settings.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "s0/models/model.h"
#include "s0/pipeline/collect.h"
#include "s0/pipeline/evaluate.h"

namespace s0::pipeline {

// Settings shared by collect and eval (the CLI's flags of the same names).
struct TaskRunSettings {
  std::string model;               // model directory (also the tokenizer and chat template)
  std::string tasks;               // task file
  std::string kind = "humaneval";  // humaneval | gsm8k | math | spider
  std::string db_dir;              // Spider databases
  std::string dtype = "bf16";
  std::string states;  // state-set directory (optional)
  bool chat = true, thinking = false, unsafe_exec = false;
  double timeout = 10;
  int workers = 2, threads = 0;
  int64_t max_new_tokens = 512;
  uint64_t seed = 0;
  bool progress = true;  // progress lines on stderr
};

struct CollectSettings : TaskRunSettings {
  std::string out;       // training JSONL to write
  std::string problems;  // --train ranges; empty: the task kind's standard training split
  double alpha = -1;     // < 0: the state set's alpha
  int64_t samples = 16, keep = 1;
  double temperature = 0.7, top_p = 0.95;
  int64_t top_k = 0;
  bool check_all = false;
  int64_t batch = 0;  // problems sampled together (0: by memory, CollectOptions::batch)
};

struct EvalSettings : TaskRunSettings {
  std::string out;             // output directory
  std::string problems;        // --eval ranges; empty: the task kind's standard held-out split
  std::vector<double> alphas;  // state-set alphas (empty: the set's own)
  bool no_base = false;
  int64_t samples = 0, batch = 16;
  std::vector<int64_t> ks = {1, 5, 10};
  double temperature = 0.7, top_p = 0.95;
};

// `model`: an already loaded model of settings.model (else it is loaded with dtype/threads).
// Returns what the CLI prints (collect: the summary with "out"; eval: summary.json).
nlohmann::json run_collect(const CollectSettings& s, models::CausalLM* model = nullptr);
nlohmann::json run_eval(const EvalSettings& s, models::CausalLM* model = nullptr);

// "0.03,0.07" -> alphas; each a non-negative number, else s0::Error naming --alpha.
std::vector<double> parse_alphas(const std::string& s);

}  // namespace s0::pipeline
