// `s0 analyze`: the paper's analyses (METHOD.md section 6) as tools, each writing OUT/NAME.json,
// OUT/NAME.svg and OUT/NAME.md (src/s0/pipeline/analysis.h) and printing the Markdown.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/adapters/state_set.h"
#include "s0/eval/prompt.h"
#include "s0/eval/tasks.h"
#include "s0/models/model.h"
#include "s0/pipeline/analysis.h"
#include "s0/pipeline/common.h"
#include "s0/pipeline/experiment.h"
#include "s0/pipeline/report.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::cli {

namespace {

// A model and the prompts of a task file's problems, rendered as `s0 eval` renders them.
struct Prompted {
  std::string model, tasks, kind = "humaneval", problems, dtype = "bf16";
  bool no_chat = false, thinking = false;
  int threads = 0;
};

void add_prompted(CLI::App& app, Prompted& p) {
  app.add_option("--model", p.model, "Model directory (Hugging Face layout)")->required();
  app.add_option("--tasks", p.tasks, "Task file (as for s0 eval)")->required();
  app.add_option("--task-kind", p.kind, "humaneval | gsm8k | math | spider")->capture_default_str();
  app.add_option("--problems", p.problems, "Problem indices (default: the held-out split, e.g. 80-163 of HumanEval; else all)");
  app.add_flag("--no-chat", p.no_chat, "Plain completion prompts (no chat template)");
  app.add_flag("--thinking", p.thinking, "Render the chat template with thinking enabled (default off)");
  app.add_option("--dtype", p.dtype, "Weight dtype: bf16 or f32")->capture_default_str();
  app.add_option("--threads", p.threads, "Intra-op threads (0 = all cores)")->capture_default_str();
}

struct Loaded {
  std::unique_ptr<models::CausalLM> model;
  std::optional<text::Tokenizer> tok;
  std::vector<eval::Task> tasks;
  std::vector<std::vector<int64_t>> prompts;
};

Loaded load_prompted(const Prompted& p, int64_t limit) {
  Loaded L;
  const auto kind = eval::parse_task_kind(p.kind);
  auto all = eval::read_tasks(kind, p.tasks);
  const int64_t n = static_cast<int64_t>(all.size());
  L.tasks = eval::select_tasks(all, eval::parse_ranges(p.problems.empty() ? eval::standard_split(kind, n, false).value_or("all")
                                                                          : p.problems,
                                                       n, "--problems"));
  if (limit > 0 && static_cast<int64_t>(L.tasks.size()) > limit) L.tasks.resize(static_cast<size_t>(limit));
  models::configure_runtime(p.threads);
  L.model = models::load_model(p.model, models::parse_dtype(p.dtype));
  L.tok = text::Tokenizer::from_model_dir(p.model);
  std::optional<text::ChatTemplate> chat;
  if (!p.no_chat) chat = text::ChatTemplate::from_model_dir(p.model);
  eval::PromptStyle style;
  style.chat = chat ? &*chat : nullptr;
  style.enable_thinking = p.thinking;
  for (const auto& t : L.tasks) L.prompts.push_back(L.tok->encode(eval::render_prompt(t, style), true));
  return L;
}

int finish(const std::string& out, const std::string& name, const nlohmann::json& r) {
  std::printf("%s\n", pipeline::write_analysis(out, name, r).c_str());
  std::fprintf(stderr, "wrote %s/%s.{json,svg,md}\n", out.c_str(), name.c_str());
  return 0;
}

}  // namespace

Action add_analyze(CLI::App& app) {
  struct Opts {
    Prompted p;
    std::string out, states, results, base = "base", config, kind = "layers", sizes = "10,25,50", tokenizer_model;
    double alpha = -1;
    int64_t max_prompts = 16, max_positions = 0;
    pipeline::ProbeOptions probe;
  };
  auto o = std::make_shared<Opts>();
  auto* pers = app.add_subcommand("persistence", "Per prompt position KL(tuned || base) and state differences, with an exponential fit");
  add_prompted(*pers, o->p);
  pers->add_option("--states", o->states, "State-set directory")->required();
  pers->add_option("--alpha", o->alpha, "Scale of the states (default: the set's alpha)");
  pers->add_option("--max-prompts", o->max_prompts, "Prompts averaged over, the first of --problems (0: all)")->capture_default_str();
  pers->add_option("--max-positions", o->max_positions, "Positions per prompt (0: the whole prompt)")->capture_default_str();
  pers->add_option("--out", o->out, "Output folder")->required();

  auto* div = app.add_subcommand("divergence", "First differing character/token of FAIL->PASS flips in an eval output");
  div->add_option("--results", o->results, "results.jsonl, an s0 eval --out folder, or an s0 experiment folder")->required();
  div->add_option("--base", o->base, "The base condition's name")->capture_default_str();
  div->add_option("--model", o->tokenizer_model, "Model directory whose tokenizer re-encodes completions without token_ids");
  div->add_option("--out", o->out, "Output folder")->required();

  auto* prb = app.add_subcommand("probe", "Per-layer linear probes of base pass/fail: recurrent state vs residual stream");
  add_prompted(*prb, o->p);
  prb->add_option("--results", o->results, "Eval output holding the base model's verdicts (labels)")->required();
  prb->add_option("--base", o->base, "The base condition's name")->capture_default_str();
  prb->add_option("--folds", o->probe.folds, "Cross-validation folds")->capture_default_str();
  prb->add_option("--pca-dims", o->probe.pca_dims, "PCA dimensions")->capture_default_str();
  prb->add_option("--l2", o->probe.l2, "L2 penalty of the logistic regression")->capture_default_str();
  prb->add_option("--seed", o->probe.seed, "Fold assignment seed")->capture_default_str();
  prb->add_option("--out", o->out, "Output folder")->required();

  auto* abl = app.add_subcommand("ablation", "Layer-subset or training-set-size sweep over seeds (an experiment per arm set)");
  abl->add_option("--config", o->config, "Experiment config JSON (as for s0 experiment)")->required();
  abl->add_option("--kind", o->kind, "layers (early/middle/late/all) or size")->capture_default_str();
  abl->add_option("--sizes", o->sizes, "Training-set sizes for --kind size")->capture_default_str();
  app.require_subcommand(1);

  return [o, pers, div, prb]() {
    if (pers->parsed()) {
      if (o->max_prompts < 0 || o->max_positions < 0) throw Error("--max-prompts and --max-positions must be >= 0");
      Loaded L = load_prompted(o->p, o->max_prompts);
      auto set = adapters::load_state_set(o->states, *L.model);
      const double alpha = o->alpha >= 0 ? o->alpha : set.alpha();
      auto r = pipeline::persistence(*L.model, L.prompts, set.adapter(alpha), o->max_positions);
      r["states"] = o->states, r["alpha"] = alpha, r["model"] = o->p.model;
      return finish(o->out, "persistence", r);
    }
    if (div->parsed()) {
      std::optional<text::Tokenizer> tok;
      if (!o->tokenizer_model.empty()) tok = text::Tokenizer::from_model_dir(o->tokenizer_model);
      auto r = pipeline::divergence(pipeline::read_eval_output(o->results), tok ? &*tok : nullptr, o->base);
      r["results"] = o->results;
      return finish(o->out, "divergence", r);
    }
    if (prb->parsed()) {
      // Labels: the base verdicts; the problems: those of --problems that have one.
      std::map<std::string, bool> passed;
      for (const auto& run : pipeline::read_eval_output(o->results))
        for (const auto& r : run.records)
          if (r.at("condition").get<std::string>() == o->base) passed[r.at("task_id").get<std::string>()] = r.at("passed").get<bool>();
      if (passed.empty()) throw Error(o->results + ": no \"" + o->base + "\" records (the labels)");
      Loaded L = load_prompted(o->p, 0);
      std::vector<std::vector<int64_t>> prompts;
      std::vector<int> labels;
      for (size_t i = 0; i < L.tasks.size(); ++i)
        if (passed.count(L.tasks[i].id)) prompts.push_back(L.prompts[i]), labels.push_back(passed[L.tasks[i].id] ? 1 : 0);
      if (prompts.empty()) throw Error("--problems and " + o->results + " share no task_id");
      auto r = pipeline::probe(pipeline::probe_features(*L.model, prompts), labels, o->probe);
      r["results"] = o->results, r["model"] = o->p.model;
      return finish(o->out, "probe", r);
    }
    auto cfg = pipeline::load_experiment_config(o->config);
    std::vector<int64_t> sizes;
    if (o->kind == "size") sizes = parse_id_list(o->sizes, "--sizes");
    auto r = pipeline::run_ablation(cfg, o->kind, sizes);
    std::printf("%s\n", pipeline::analysis_section("ablation_" + o->kind, r, "ablation_" + o->kind + ".svg").c_str());
    return 0;
  };
}

}  // namespace s0::cli
