#include "s0/pipeline/demo.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "s0/adapters/state_set.h"
#include "s0/dist/dist.h"
#include "s0/eval/prompt.h"
#include "s0/eval/tasks.h"
#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/models/model.h"
#include "s0/pipeline/experiment.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::pipeline {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string find_assets(const std::vector<std::string>& tries) {
  for (const auto& t : tries)
    if (fs::exists(fs::path(t) / "builtin" / "model" / "config.json")) return t;
  std::string msg = "the built-in model was not found; looked in:";
  for (const auto& t : tries) msg += " " + t + "/builtin/model";
  throw Error(msg + " (pass --assets DIR or set S0_ASSETS)");
}

// The headline numbers of the experiment's analyses (the full results are in
// experiment/analysis/).
json brief_analyses(const json& a) {
  json b = json::object();
  if (a.contains("persistence")) {
    const json& p = a["persistence"];
    b["persistence"] = {{"prompts", p["prompts"]}, {"kl_first", p["kl_first"]}, {"kl_last_prompt_token", p["kl_last_prompt_token"]},
                        {"kl_last_over_first", p["kl_last_over_first"]},
                        {"half_life_tokens", p["fit"].is_object() ? p["fit"]["half_life_tokens"] : json(nullptr)}};
  }
  if (a.contains("divergence")) {
    json c = json::array();
    for (const auto& x : a["divergence"]["conditions"])
      c.push_back({{"name", x["name"]}, {"fail_to_pass", x["fail_to_pass"]},
                   {"at_position_0", x["first_char"].value("at_position_0", json(nullptr))},
                   {"median", x["first_char"].value("median", json(nullptr))}});
    b["divergence"] = c;
  }
  if (a.contains("probe")) b["probe"] = {{"best_state", a["probe"]["best_state"]}, {"best_residual", a["probe"]["best_residual"]}};
  return b;
}

// Every arm of an experiment side by side (for the comparison tables).
json comparison_rows(const json& summary) {
  json comparison = json::array();
  for (const auto& c : summary["methods"]) {
    json row = {{"name", c["name"]}, {"kind", c["kind"]}};
    for (const char* k : {"pass@1_mean", "pass@1_std", "delta_pp_mean", "delta_pp_std", "mcnemar_p_max", "params", "bytes",
                          "decode_tokens_per_s", "decode_vs_base", "fail_to_pass", "pass_to_fail", "train_seconds_mean"})
      row[k] = c.value(k, json(nullptr));
    row["welch_p"] = c.contains("welch_vs_base") ? c["welch_vs_base"]["p"] : json(nullptr);
    row["welch_zero_variance"] = c.contains("welch_vs_base") ? c["welch_vs_base"]["zero_variance"] : json(nullptr);
    comparison.push_back(row);
  }
  return comparison;
}

// The control: the hybrid's experiment config on the built-in pure Transformer, prefix
// tuning (one arm per learning rate) in place of S0 and its baselines.
json run_control(const DemoOptions& o, const fs::path& assets, const fs::path& out, json cfg) {
  const fs::path dir = assets / "control";
  if (!fs::exists(dir / "config.json"))
    throw Error("the built-in control model was not found in " + dir.string() +
                " (see tools/builtin/README.md for the command that pretrains it)");
  if (o.control_lrs.empty()) throw Error("--control-lr: at least one learning rate");
  json info = fs::exists(dir / "builtin.json") ? json::parse(io::read_file((dir / "builtin.json").string())) : json::object();
  json methods = json::array();
  for (double lr : o.control_lrs) {
    char name[64];
    snprintf(name, sizeof name, o.control_lrs.size() == 1 ? "prefix" : "prefix_lr%g", lr);
    methods.push_back({{"name", name}, {"kind", "prefix"}, {"virtual_tokens", 30}, {"prefix_projection", true},
                       {"lr", lr}, {"steps", o.quick ? 2 : o.control_steps}, {"batch", 1}});
  }
  cfg["model"] = dir.string();
  cfg["methods"] = methods;
  cfg["out"] = (out / "control").string();
  cfg.erase("analyses");  // they read recurrent states, which a Transformer has none of
  auto model = models::load_model(dir.string(), at::kFloat);
  if (!dist::current() || dist::current()->root())
    std::fprintf(stderr, "s0 demo: control %s (%s): prefix tuning at %zu learning rate(s)\n", dir.string().c_str(),
               info.value("description", std::string("")).c_str(), o.control_lrs.size());
  json summary = run_experiment(cfg, model.get());
  return {{"model", dir.string()},
          {"description", info.value("description", std::string(""))},
          {"parameters", info.value("parameters", json(nullptr))},
          {"base_pass@1", summary["base"]["pass@1"]},
          {"comparison", comparison_rows(summary)},
          {"report", (out / "control" / "report.md").string()}};
}

}  // namespace

DemoResult run_demo(const DemoOptions& opt) {
  DemoOptions o = opt;
  if (o.quick) o.seeds = 1, o.train_problems = 8, o.eval_problems = 10, o.samples = 4, o.steps = 2, o.train_subset = 0;
  if (o.seeds < 1) throw Error("--seeds must be >= 1");
  const fs::path assets = fs::path(find_assets(o.assets)) / "builtin";
  const fs::path out = fs::absolute(o.out);
  fs::create_directories(out);
  const std::string model_dir = (assets / "model").string();
  json info = json::parse(io::read_file((assets / "model" / "builtin.json").string()));
  const double alpha = o.alpha >= 0 ? o.alpha : info.value("alpha", 0.07);

  // One task file, training problems first (the experiment selects by index).
  auto train = eval::read_tasks(eval::TaskKind::HumanEval, (assets / "tasks" / "train.jsonl").string());
  auto held = eval::read_tasks(eval::TaskKind::HumanEval, (assets / "tasks" / "eval.jsonl").string());
  const int64_t ntr = o.train_problems > 0 ? std::min<int64_t>(o.train_problems, train.size()) : train.size();
  const int64_t nev = o.eval_problems > 0 ? std::min<int64_t>(o.eval_problems, held.size()) : held.size();
  {
    std::string all = eval::read_text_file((assets / "tasks" / "train.jsonl").string());
    if (!all.empty() && all.back() != '\n') all += '\n';
    all += eval::read_text_file((assets / "tasks" / "eval.jsonl").string());
    io::write_file_atomic((out / "tasks.jsonl").string(), all);
  }
  json seeds = json::array();
  for (int64_t s = 0; s < o.seeds; ++s) seeds.push_back(s);
  json cfg = {{"model", model_dir},
              {"tasks", (out / "tasks.jsonl").string()},
              {"task_kind", "humaneval"},
              {"db_dir", ""},
              {"train_problems", "0-" + std::to_string(ntr - 1)},
              {"eval_problems", std::to_string(train.size()) + "-" + std::to_string(train.size() + nev - 1)},
              {"seeds", seeds},
              {"chat", true},
              {"thinking", false},
              {"dtype", "f32"},
              {"threads", o.threads},
              {"unsafe_exec", o.unsafe_exec},
              {"timeout", 10.0},
              {"workers", 2},
              {"collect", {{"samples", o.samples}, {"keep", 1}, {"check_all", false}, {"temperature", 0.7},
                           {"top_p", 0.95}, {"top_k", 0}, {"max_new_tokens", o.max_new_tokens}}},
              {"training", {{"steps", o.steps}, {"lr", 1e-3}, {"l2", 5e-4}, {"clip", 1.0}, {"layers", "all"},
                            {"max_length", 2048}, {"normalize", false}, {"alpha_in_training", false}}},
              {"eval", {{"alphas", {alpha}}, {"max_new_tokens", o.max_new_tokens}, {"samples", 0}, {"ks", {1}}}},
              {"train_subset", o.train_subset},
              {"out", (out / "experiment").string()}};
  // The arms compared on the same collected data per seed: S0, and (unless --no-baselines)
  // the paper's LoRA (rank 24, lora_alpha 48, q/k/v/o of the attention layer, Adam 5e-4,
  // 50 steps of one example) and the state offset (S0's schedule).
  json methods = json::array({{{"name", "s0"}, {"kind", "s0"}}});
  if (o.baselines) {
    methods.push_back({{"name", "lora"}, {"kind", "lora"}, {"rank", 24}, {"lora_alpha", 48}, {"lr", 5e-4},
                       {"steps", o.quick ? 2 : 50}, {"batch", 1}});
    methods.push_back({{"name", "offset"}, {"kind", "offset"}, {"lr", 1e-3}, {"steps", o.steps}});
  }
  cfg["methods"] = methods;
  // The paper's analyses in the report: how long the tuned state's influence lasts along the
  // prompt, where FAIL->PASS flips diverge, and linear probes of the base model's pass/fail.
  cfg["analyses"] = {{"persistence", {{"prompts", o.quick ? 4 : 16}, {"max_positions", 0}}},
                     {"divergence", true},
                     {"probe", {{"folds", 5}, {"pca_dims", 64}, {"l2", 1.0}, {"seed", 0}}}};
  models::configure_runtime(o.threads);
  auto model = models::load_model(model_dir, at::kFloat);
  if (!dist::current() || dist::current()->root())
    std::fprintf(stderr, "s0 demo: built-in model %s (%s), %lld training / %lld held-out problems, %lld seeds\n",
               model_dir.c_str(), info.value("description", std::string("")).c_str(), static_cast<long long>(ntr),
               static_cast<long long>(nev), static_cast<long long>(o.seeds));
  json summary = run_experiment(cfg, model.get());

  // Decode speed with and without S0: measured by the experiment (seed 0's adapters, the
  // conditions interleaved).
  const fs::path states_dir = out / "experiment" / "seed_0" / "states";
  json speed = json(nullptr);
  int64_t state_bytes = 0;
  if (fs::exists(states_dir / "states.safetensors")) state_bytes = adapters::load_state_set(states_dir.string(), *model).num_bytes();
  const json& m0 = summary["methods"][0];
  if (m0.contains("decode_tokens_per_s") && summary["base"]["decode_tokens_per_s"].is_number()) {
    const double b = summary["base"]["decode_tokens_per_s"].get<double>(), s = m0["decode_tokens_per_s"].get<double>();
    speed = {{"base", b}, {"s0", s}, {"s0_over_base", s / b}};
  }
  json comparison = comparison_rows(summary);

  const json& m = summary["methods"][0];
  const double base = summary["base"]["pass@1"].get<double>();
  json result = {{"model", model_dir},
                 {"alpha", alpha},
                 {"train_problems", ntr},
                 {"eval_problems", nev},
                 {"seeds", o.seeds},
                 {"base_pass@1", base},
                 {"s0_pass@1_per_seed", m["pass@1_per_seed"]},
                 {"s0_pass@1_mean", m.value("pass@1_mean", json(nullptr))},
                 {"s0_pass@1_std", m.value("pass@1_std", json(nullptr))},
                 {"delta_pp_mean", m.value("delta_pp_mean", json(nullptr))},
                 {"delta_pp_std", m.value("delta_pp_std", json(nullptr))},
                 {"welch_p", m.contains("welch_vs_base") ? m["welch_vs_base"]["p"] : json(nullptr)},
                 {"welch_zero_variance", m.contains("welch_vs_base") ? m["welch_vs_base"]["zero_variance"] : json(nullptr)},
                 {"mcnemar_p_max", m.value("mcnemar_p_max", json(nullptr))},
                 {"fail_to_pass", m["fail_to_pass"]},
                 {"pass_to_fail", m["pass_to_fail"]},
                 {"state_set_bytes", state_bytes},
                 {"decode_tokens_per_s", speed},
                 {"comparison", comparison},
                 {"paired_tests", summary["paired_tests"]},
                 {"analyses", brief_analyses(summary.value("analyses", json::object()))},
                 {"report", (out / "experiment" / "report.md").string()},
                 {"state_set", states_dir.string()}};
  if (o.control) {
    model.reset();
    result["control"] = run_control(o, assets, out, cfg);
    result["parameters"] = info.value("parameters", json(nullptr));
  }
  const std::string path = (out / "demo.json").string();
  // Distributed: every rank ran the experiments (sharded); rank 0 writes the demo's file.
  if (!dist::current() || dist::current()->root()) io::write_file_atomic(path, result.dump(2) + "\n");
  return {std::move(result), path};
}

}  // namespace s0::pipeline
