#include "s0/pipeline/run.h"

#include <cstdio>
#include <optional>
#include <sstream>

#include "s0/adapters/state_set.h"
#include "s0/eval/checkers.h"
#include "s0/eval/prompt.h"
#include "s0/eval/tasks.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::pipeline {

namespace {

struct Loaded {
  std::unique_ptr<models::CausalLM> owned;
  models::CausalLM* model = nullptr;
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

Loaded load_common(const TaskRunSettings& c, models::CausalLM* model) {
  Loaded L;
  L.kind = eval::parse_task_kind(c.kind);
  L.all = eval::read_tasks(L.kind, c.tasks, c.db_dir);
  // Refuse before loading the model: running code needs the sandbox or an explicit opt-out.
  if (L.kind == eval::TaskKind::HumanEval) L.sandbox = eval::Sandbox::create(c.unsafe_exec);
  if (L.kind == eval::TaskKind::HumanEval && !L.sandbox.isolated())
    std::fprintf(stderr,
                 "warning: bubblewrap unavailable; --unsafe-exec: model code runs unsandboxed "
                 "(rlimits only)\n");
  if (c.timeout <= 0) throw Error("--timeout must be > 0");
  if (c.workers < 1) throw Error("--workers must be >= 1");
  L.check.limits.wall_seconds = c.timeout;
  L.check.limits.cpu_seconds = c.timeout;
  L.check.workers = c.workers;
  if (model) {
    L.model = model;
  } else {
    models::configure_runtime(c.threads);
    L.owned = models::load_model(c.model, models::parse_dtype(c.dtype));
    L.model = L.owned.get();
  }
  L.tok = text::Tokenizer::from_model_dir(c.model);
  if (c.chat) {
    try {
      L.chat = text::ChatTemplate::from_model_dir(c.model);
    } catch (const FileNotFound&) {
      throw;
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + "\n(use --no-chat for plain completion prompts)");
    }
  }
  return L;
}

std::string default_range(eval::TaskKind k, bool train, int64_t n) {
  return eval::standard_split(k, n, train).value_or("all");
}

}  // namespace

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

nlohmann::json run_collect(const CollectSettings& s, models::CausalLM* model) {
  if (s.out.empty()) throw Error("collect needs an output file (--out)");
  Loaded L = load_common(s, model);
  const auto n = static_cast<int64_t>(L.all.size());
  auto idx = eval::parse_ranges(s.problems.empty() ? default_range(L.kind, true, n) : s.problems, n,
                                "--train");
  auto tasks = eval::select_tasks(L.all, idx);
  std::optional<models::StateMap> states;
  if (!s.states.empty())
    states = adapters::load_state_set(s.states, *L.model)
                 .scaled(s.alpha >= 0 ? std::optional<double>(s.alpha) : std::nullopt);
  else if (s.alpha >= 0)
    throw Error("--alpha needs --states");
  CollectOptions co;
  co.samples = s.samples;
  co.keep = s.keep;
  co.sampling.temperature = s.temperature;
  co.sampling.top_p = s.top_p;
  co.sampling.top_k = s.top_k;
  co.sampling.max_new_tokens = s.max_new_tokens;
  co.sampling.seed = s.seed;
  co.check = L.check;
  co.check_all = s.check_all;
  co.progress = s.progress;
  co.batch = s.batch;
  auto sum = collect(*L.model, *L.tok, L.style(), tasks, states ? &*states : nullptr, L.sandbox, co,
                     s.out);
  nlohmann::json j = sum.to_json();
  j["out"] = s.out;
  return j;
}

nlohmann::json run_eval(const EvalSettings& s, models::CausalLM* model) {
  if (s.out.empty()) throw Error("eval needs an output directory (--out)");
  if (s.no_base && s.states.empty()) throw Error("--no-base needs --states");
  if (!s.alphas.empty() && s.states.empty()) throw Error("--alpha needs --states");
  for (double a : s.alphas)
    if (!(a >= 0)) throw Error("--alpha: every alpha must be a non-negative number");
  for (int64_t k : s.ks)
    if (k < 1) throw Error("--k values must be >= 1");
  Loaded L = load_common(s, model);
  const auto n = static_cast<int64_t>(L.all.size());
  auto idx = eval::parse_ranges(s.problems.empty() ? default_range(L.kind, false, n) : s.problems,
                                n, "--eval");
  auto tasks = eval::select_tasks(L.all, idx);
  std::vector<Condition> conds;
  if (!s.no_base) conds.push_back({"base", std::nullopt, std::nullopt});
  if (!s.states.empty()) {
    auto set = adapters::load_state_set(s.states, *L.model);
    std::vector<double> alphas = s.alphas.empty() ? std::vector<double>{set.alpha()} : s.alphas;
    for (double a : alphas) {
      char name[64];
      snprintf(name, sizeof name, "s0@%g", a);
      conds.push_back({name, set.scaled(a), a});
    }
  }
  EvalOptions eo;
  eo.samples = s.samples;
  eo.batch = s.batch;
  eo.ks = s.ks;
  eo.sampling.temperature = s.temperature;
  eo.sampling.top_p = s.top_p;
  eo.max_new_tokens = s.max_new_tokens;
  eo.sampling.seed = s.seed;
  eo.check = L.check;
  eo.progress = s.progress;
  eo.meta = {{"model", s.model},    {"tasks", s.tasks},
             {"task_kind", s.kind}, {"problems", static_cast<int64_t>(tasks.size())},
             {"states", s.states},  {"chat", s.chat},
             {"dtype", s.dtype},    {"sandbox", L.sandbox.isolated() ? "bubblewrap" : "none"}};
  return evaluate(*L.model, *L.tok, L.style(), tasks, conds, L.sandbox, eo, s.out);
}

}  // namespace s0::pipeline
