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
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::cli {

namespace {

// Options shared by collect and eval: model, tasks, prompting, sandbox.
struct Common {
  std::string model, tasks, kind = "humaneval", db_dir, dtype = "bf16", states;
  double alpha = -1;
  bool no_chat = false, thinking = false, unsafe_exec = false;
  double timeout = 10;
  int workers = 2, threads = 0;
  int64_t max_new = 512;
  uint64_t seed = 0;
};

void add_common(CLI::App& app, Common& c) {
  app.add_option("--model", c.model, "Model directory (Hugging Face layout)")->required();
  app.add_option("--tasks", c.tasks, "Task file (HumanEval JSONL/JSONL.GZ, GSM8K, MATH-500 JSONL, Spider JSON)")->required();
  app.add_option("--task-kind", c.kind, "humaneval | gsm8k | math | spider")->capture_default_str();
  app.add_option("--db-dir", c.db_dir, "Spider: folder of SQLite databases (<db_id>/<db_id>.sqlite)");
  app.add_option("--states", c.states, "S0 state-set directory");
  app.add_flag("--no-chat", c.no_chat, "Do not use the chat template (plain completion prompts)");
  app.add_flag("--thinking", c.thinking, "Render the chat template with thinking enabled (default off)");
  app.add_option("--max-new-tokens", c.max_new, "New tokens per completion")->capture_default_str();
  app.add_option("--seed", c.seed, "Sampling seed")->capture_default_str();
  app.add_option("--timeout", c.timeout, "Wall-clock seconds per program run")->capture_default_str();
  app.add_option("--workers", c.workers, "Parallel sandboxed runs")->capture_default_str();
  app.add_flag("--unsafe-exec", c.unsafe_exec,
               "Run model-written code WITHOUT the bubblewrap sandbox when it is unavailable (limits still apply)");
  app.add_option("--dtype", c.dtype, "Weight dtype: bf16 or f32")->capture_default_str();
  app.add_option("--threads", c.threads, "Intra-op threads (0 = all cores)")->capture_default_str();
}

std::string default_range(eval::TaskKind k, bool train, int64_t n) {
  return eval::standard_split(k, n, train).value_or("all");
}

struct Loaded {
  std::unique_ptr<models::CausalLM> model;
  std::optional<text::Tokenizer> tok;
  std::optional<text::ChatTemplate> chat;
  std::vector<eval::Task> all;
  eval::TaskKind kind;
  eval::Sandbox sandbox;
  eval::CheckOptions check;
  eval::PromptStyle style() const {
    eval::PromptStyle s;
    s.chat = chat ? &*chat : nullptr;
    return s;
  }
};

Loaded load_common(const Common& c) {
  Loaded L;
  L.kind = eval::parse_task_kind(c.kind);
  L.all = eval::read_tasks(L.kind, c.tasks, c.db_dir);
  // Refuse before loading the model: running code needs the sandbox or an explicit opt-out.
  if (L.kind == eval::TaskKind::HumanEval) L.sandbox = eval::Sandbox::create(c.unsafe_exec);
  if (L.kind == eval::TaskKind::HumanEval && !L.sandbox.isolated())
    std::fprintf(stderr, "warning: bubblewrap unavailable; --unsafe-exec: model code runs unsandboxed (rlimits only)\n");
  if (c.timeout <= 0) throw Error("--timeout must be > 0");
  if (c.workers < 1) throw Error("--workers must be >= 1");
  L.check.limits.wall_seconds = c.timeout;
  L.check.limits.cpu_seconds = c.timeout;
  L.check.workers = c.workers;
  models::configure_runtime(c.threads);
  L.model = models::load_model(c.model, models::parse_dtype(c.dtype));
  L.tok = text::Tokenizer::from_model_dir(c.model);
  if (!c.no_chat) {
    try {
      L.chat = text::ChatTemplate::from_model_dir(c.model);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + "\n(use --no-chat for plain completion prompts)");
    }
  }
  return L;
}

std::vector<double> parse_alphas(const std::string& s) {
  std::vector<double> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      double a = std::stod(item, &used);
      if (used != item.size() || !(a >= 0)) throw std::invalid_argument("");
      out.push_back(a);
    } catch (const std::exception&) {
      throw Error("--alpha: '" + item + "' is not a non-negative number");
    }
  }
  return out;
}

}  // namespace

Action add_collect(CLI::App& app) {
  struct Opts : Common {
    std::string out, train;
    pipeline::CollectOptions co;
  };
  auto o = std::make_shared<Opts>();
  add_common(app, *o);
  app.add_option("--out", o->out, "Training JSONL to write (resumes when it exists)")->required();
  app.add_option("--train", o->train, "Problem indices (default: 0-79 for the 164 HumanEval problems, else all)");
  app.add_option("--samples", o->co.samples, "Completions sampled per problem")->capture_default_str();
  app.add_option("--keep", o->co.keep, "Passing completions kept per problem")->capture_default_str();
  app.add_option("--temperature", o->co.sampling.temperature, "Sampling temperature")->capture_default_str();
  app.add_option("--top-p", o->co.sampling.top_p, "Nucleus sampling mass")->capture_default_str();
  app.add_option("--top-k", o->co.sampling.top_k, "Top-k (0: off)")->capture_default_str();
  app.add_option("--alpha", o->alpha, "Scale of --states (default: the state set's alpha)");
  app.add_flag("--check-all", o->co.check_all, "Verify every sample (default: stop once --keep solutions are found)");
  return [o]() {
    Loaded L = load_common(*o);
    auto idx = eval::parse_ranges(o->train.empty() ? default_range(L.kind, true, static_cast<int64_t>(L.all.size())) : o->train,
                                  static_cast<int64_t>(L.all.size()), "--train");
    auto tasks = eval::select_tasks(L.all, idx);
    std::optional<models::StateMap> states;
    if (!o->states.empty())
      states = adapters::load_state_set(o->states, *L.model).scaled(o->alpha >= 0 ? std::optional<double>(o->alpha) : std::nullopt);
    o->co.sampling.max_new_tokens = o->max_new;
    o->co.sampling.seed = o->seed;
    o->co.check = L.check;
    auto sum = pipeline::collect(*L.model, *L.tok, L.style(), tasks, states ? &*states : nullptr, L.sandbox, o->co, o->out);
    nlohmann::json j = sum.to_json();
    j["out"] = o->out;
    std::printf("%s\n", j.dump().c_str());
    return 0;
  };
}

Action add_eval(CLI::App& app) {
  struct Opts : Common {
    std::string out, range, alphas, ks = "1,5,10";
    pipeline::EvalOptions eo;
    bool no_base = false;
  };
  auto o = std::make_shared<Opts>();
  add_common(app, *o);
  app.add_option("--out", o->out, "Output directory: results.jsonl, summary.json, report.md (resumes)")->required();
  app.add_option("--eval", o->range, "Problem indices (default: 80-163 for the 164 HumanEval problems, else all)");
  app.add_option("--alpha", o->alphas, "Comma-separated alphas for --states (a sweep), default: the set's alpha");
  app.add_flag("--no-base", o->no_base, "Skip the base model (only with --states)");
  app.add_option("--samples", o->eo.samples, "Also sample n completions per problem for pass@k (0: greedy only)")
      ->capture_default_str();
  app.add_option("--batch", o->eo.batch, "Problems decoded together (greedy; results equal one at a time)")
      ->capture_default_str();
  app.add_option("--k", o->ks, "pass@k values reported for --samples")->capture_default_str();
  app.add_option("--temperature", o->eo.sampling.temperature, "Temperature of the pass@k samples")->capture_default_str();
  app.add_option("--top-p", o->eo.sampling.top_p, "Top-p of the pass@k samples")->capture_default_str();
  return [o]() {
    if (o->no_base && o->states.empty()) throw Error("--no-base needs --states");
    if (!o->alphas.empty() && o->states.empty()) throw Error("--alpha needs --states");
    Loaded L = load_common(*o);
    auto idx = eval::parse_ranges(o->range.empty() ? default_range(L.kind, false, static_cast<int64_t>(L.all.size())) : o->range,
                                  static_cast<int64_t>(L.all.size()), "--eval");
    auto tasks = eval::select_tasks(L.all, idx);
    std::vector<pipeline::Condition> conds;
    if (!o->no_base) conds.push_back({"base", std::nullopt, std::nullopt});
    if (!o->states.empty()) {
      auto set = adapters::load_state_set(o->states, *L.model);
      std::vector<double> alphas = o->alphas.empty() ? std::vector<double>{set.alpha()} : parse_alphas(o->alphas);
      for (double a : alphas) {
        char name[64];
        snprintf(name, sizeof name, "s0@%g", a);
        conds.push_back({name, set.scaled(a), a});
      }
    }
    for (int64_t k : parse_id_list(o->ks, "--k"))
      if (k < 1) throw Error("--k values must be >= 1");
    o->eo.ks = parse_id_list(o->ks, "--k");
    o->eo.max_new_tokens = o->max_new;
    o->eo.sampling.seed = o->seed;
    o->eo.check = L.check;
    o->eo.meta = {{"model", o->model}, {"tasks", o->tasks}, {"task_kind", o->kind}, {"problems", static_cast<int64_t>(tasks.size())},
                  {"states", o->states}, {"chat", !o->no_chat}, {"dtype", o->dtype}, {"sandbox", L.sandbox.isolated() ? "bubblewrap" : "none"}};
    auto summary = pipeline::evaluate(*L.model, *L.tok, L.style(), tasks, conds, L.sandbox, o->eo, o->out);
    std::printf("%s\n", summary.dump().c_str());
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
