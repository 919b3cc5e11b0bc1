// `s0 collect`, `s0 eval` and `s0 experiment`: the paper's data and evaluation protocol
// (METHOD.md section 4), run by src/s0/pipeline/.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/adapters/state_set.h"
#include "s0/eval/checkers.h"
#include "s0/eval/prompt.h"
#include "s0/eval/tasks.h"
#include "s0/models/model.h"
#include "s0/pipeline/collect.h"
#include "s0/pipeline/evaluate.h"
#include "s0/pipeline/experiment.h"
#include "s0/pipeline/run.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::cli {

namespace {

// Options shared by collect and eval: model, tasks, prompting, sandbox.
void add_common(CLI::App& app, pipeline::TaskRunSettings& c, bool& no_chat) {
  app.add_option("--model", c.model, "Model directory (Hugging Face layout)")->required();
  app.add_option("--tasks", c.tasks, "Task file (HumanEval JSONL/JSONL.GZ, GSM8K, MATH-500 JSONL, Spider JSON)")->required();
  app.add_option("--task-kind", c.kind, "humaneval | gsm8k | math | spider")->capture_default_str();
  app.add_option("--db-dir", c.db_dir, "Spider: folder of SQLite databases (<db_id>/<db_id>.sqlite)");
  app.add_option("--states", c.states, "S0 state-set directory");
  app.add_flag("--no-chat", no_chat, "Do not use the chat template (plain completion prompts)");
  app.add_flag("--thinking", c.thinking, "Render the chat template with thinking enabled (default off)");
  app.add_option("--max-new-tokens", c.max_new_tokens, "New tokens per completion")->capture_default_str();
  app.add_option("--seed", c.seed, "Sampling seed")->capture_default_str();
  app.add_option("--timeout", c.timeout, "Wall-clock seconds per program run")->capture_default_str();
  app.add_option("--workers", c.workers, "Parallel sandboxed runs")->capture_default_str();
  app.add_flag("--unsafe-exec", c.unsafe_exec,
               "Run model-written code WITHOUT the bubblewrap sandbox when it is unavailable (limits still apply)");
  app.add_option("--dtype", c.dtype, "Weight dtype: bf16 or f32")->capture_default_str();
  app.add_option("--threads", c.threads, "Intra-op threads (0 = all cores)")->capture_default_str();
}

}  // namespace

Action add_collect(CLI::App& app) {
  struct Opts {
    pipeline::CollectSettings s;
    bool no_chat = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(app, o->s, o->no_chat);
  app.add_option("--out", o->s.out, "Training JSONL to write (resumes when it exists)")->required();
  app.add_option("--train", o->s.problems, "Problem indices (default: 0-79 for the 164 HumanEval problems, else all)");
  app.add_option("--samples", o->s.samples, "Completions sampled per problem")->capture_default_str();
  app.add_option("--keep", o->s.keep, "Passing completions kept per problem")->capture_default_str();
  app.add_option("--temperature", o->s.temperature, "Sampling temperature")->capture_default_str();
  app.add_option("--top-p", o->s.top_p, "Nucleus sampling mass")->capture_default_str();
  app.add_option("--top-k", o->s.top_k, "Top-k (0: off)")->capture_default_str();
  app.add_option("--alpha", o->s.alpha, "Scale of --states (default: the state set's alpha)");
  app.add_flag("--check-all", o->s.check_all, "Verify every sample (default: stop once --keep solutions are found)");
  app.add_option("--batch", o->s.batch,
                 "Problems sampled together, their samples decoded as one batch (0: up to 64 sequences, "
                 "as memory allows; results equal one problem at a time)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  return [o]() {
    o->s.chat = !o->no_chat;
    std::printf("%s\n", pipeline::run_collect(o->s).dump().c_str());
    return 0;
  };
}

Action add_eval(CLI::App& app) {
  struct Opts {
    pipeline::EvalSettings s;
    std::string alphas, ks = "1,5,10";
    bool no_chat = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(app, o->s, o->no_chat);
  app.add_option("--out", o->s.out, "Output directory: results.jsonl, summary.json, report.md (resumes)")->required();
  app.add_option("--eval", o->s.problems, "Problem indices (default: 80-163 for the 164 HumanEval problems, else all)");
  app.add_option("--alpha", o->alphas, "Comma-separated alphas for --states (a sweep), default: the set's alpha");
  app.add_flag("--no-base", o->s.no_base, "Skip the base model (only with --states)");
  app.add_option("--samples", o->s.samples, "Also sample n completions per problem for pass@k (0: greedy only)")
      ->capture_default_str();
  app.add_option("--batch", o->s.batch, "Problems decoded together (greedy; results equal one at a time)")
      ->capture_default_str();
  app.add_option("--k", o->ks, "pass@k values reported for --samples")->capture_default_str();
  app.add_option("--temperature", o->s.temperature, "Temperature of the pass@k samples")->capture_default_str();
  app.add_option("--top-p", o->s.top_p, "Top-p of the pass@k samples")->capture_default_str();
  return [o]() {
    o->s.chat = !o->no_chat;
    if (!o->alphas.empty()) o->s.alphas = pipeline::parse_alphas(o->alphas);
    o->s.ks = parse_id_list(o->ks, "--k");
    std::printf("%s\n", pipeline::run_eval(o->s).dump().c_str());
    return 0;
  };
}

Action add_experiment(CLI::App& app) {
  struct Opts {
    std::string config, out;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--config", o->config, "Experiment config JSON (see README: Experiments)")->required();
  app.add_option("--out", o->out, "Output folder (default: the config's \"out\", else next to the config)");
  return [o]() {
    auto cfg = pipeline::load_experiment_config(o->config);
    if (!o->out.empty()) cfg["out"] = std::filesystem::absolute(o->out).lexically_normal().string();
    auto summary = pipeline::run_experiment(cfg);
    nlohmann::json brief = {{"base", summary["base"]}, {"methods", summary["methods"]},
                            {"report", (std::filesystem::path(cfg["out"].get<std::string>()) / "report.md").string()}};
    std::printf("%s\n", brief.dump().c_str());
    return 0;
  };
}

}  // namespace s0::cli
