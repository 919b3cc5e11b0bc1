#include "s0/pipeline/experiment.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "s0/adapters/state_set.h"
#include "s0/eval/stats.h"
#include "s0/eval/tasks.h"
#include "s0/io/atomic_file.h"
#include "s0/pipeline/collect.h"
#include "s0/pipeline/evaluate.h"
#include "s0/pipeline/report.h"
#include "s0/train/data.h"
#include "s0/train/trainer.h"
#include "s0/util/error.h"

namespace s0::pipeline {

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

json defaults() {
  return {{"model", nullptr},
          {"tasks", nullptr},
          {"task_kind", "humaneval"},
          {"db_dir", ""},
          {"train_problems", nullptr},
          {"eval_problems", nullptr},
          {"seeds", {0, 1, 2}},
          {"chat", true},
          {"thinking", false},
          {"dtype", "bf16"},
          {"threads", 0},
          {"unsafe_exec", false},
          {"timeout", 10.0},
          {"workers", 2},
          {"collect", {{"samples", 16}, {"keep", 1}, {"check_all", false}, {"temperature", 0.7}, {"top_p", 0.95}, {"top_k", 0}, {"max_new_tokens", 512}}},
          {"training",
           {{"steps", 20},
            {"lr", 1e-3},
            {"l2", 5e-4},
            {"clip", 1.0},
            {"layers", "all"},
            {"max_length", 2048},
            {"normalize", false},
            {"alpha_in_training", false}}},
          {"eval", {{"alphas", nullptr}, {"max_new_tokens", 512}, {"samples", 0}, {"ks", {1, 5, 10}}}},
          {"out", nullptr}};
}

// Overlays `user` on `base`, refusing keys `base` does not have.
void merge(json& base, const json& user, const std::string& where) {
  if (!user.is_object()) throw Error(where + ": expected a JSON object");
  for (auto& [k, v] : user.items()) {
    if (!base.contains(k)) throw Error(where + ": unknown key \"" + k + "\"");
    if (base[k].is_object()) merge(base[k], v, where + "." + k);
    else base[k] = v;
  }
}

std::string resolve(const fs::path& dir, const json& v) {
  std::string s = v.get<std::string>();
  if (s.empty()) return s;
  fs::path p(s);
  return (p.is_absolute() ? p : dir / p).lexically_normal().string();
}

}  // namespace

json load_experiment_config(const std::string& path) {
  json user;
  try {
    user = json::parse(io::read_file(path));
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
  json cfg = defaults();
  merge(cfg, user, path);
  for (const char* k : {"model", "tasks"})
    if (!cfg[k].is_string()) throw Error(path + ": \"" + std::string(k) + "\" (a path) is required");
  if (!cfg["seeds"].is_array() || cfg["seeds"].empty()) throw Error(path + ": \"seeds\" must be a non-empty array");
  fs::path dir = fs::absolute(path).parent_path();
  cfg["model"] = resolve(dir, cfg["model"]);
  cfg["tasks"] = resolve(dir, cfg["tasks"]);
  cfg["db_dir"] = resolve(dir, cfg["db_dir"]);
  if (cfg["out"].is_null()) cfg["out"] = (dir / fs::path(path).stem()).string();
  else cfg["out"] = resolve(dir, cfg["out"]);
  return cfg;
}

json run_experiment(const json& cfg, models::CausalLM* model_in) {
  const fs::path out = cfg["out"].get<std::string>();
  fs::create_directories(out);
  {
    // The config this output belongs to: a different one is refused (resume safety).
    const std::string p = (out / "experiment.json").string();
    if (fs::exists(p)) {
      json old = json::parse(io::read_file(p));
      if (old != cfg)
        throw Error(p + " holds another experiment's config; use another \"out\" or delete the folder");
    } else {
      io::write_file_atomic(p, cfg.dump(2) + "\n");
    }
  }
  const eval::TaskKind kind = eval::parse_task_kind(cfg["task_kind"].get<std::string>());
  auto all = eval::read_tasks(kind, cfg["tasks"].get<std::string>(), cfg["db_dir"].get<std::string>());
  const int64_t n = static_cast<int64_t>(all.size());
  auto range = [&](const char* key, bool train) {
    if (cfg[key].is_string()) return cfg[key].get<std::string>();
    if (auto split = eval::standard_split(kind, n, train)) return *split;
    throw Error(std::string("experiment config: \"") + key + "\" is required for this task file");
  };
  auto train_tasks = eval::select_tasks(all, eval::parse_ranges(range("train_problems", true), n, "train_problems"));
  auto eval_tasks = eval::select_tasks(all, eval::parse_ranges(range("eval_problems", false), n, "eval_problems"));

  eval::Sandbox sandbox =
      kind == eval::TaskKind::HumanEval ? eval::Sandbox::create(cfg["unsafe_exec"].get<bool>()) : eval::Sandbox();
  eval::CheckOptions check;
  check.limits.wall_seconds = check.limits.cpu_seconds = cfg["timeout"].get<double>();
  check.workers = cfg["workers"].get<int>();

  std::unique_ptr<models::CausalLM> owned;
  if (!model_in) {
    models::configure_runtime(cfg["threads"].get<int>());
    owned = models::load_model(cfg["model"].get<std::string>(), models::parse_dtype(cfg["dtype"].get<std::string>()));
    model_in = owned.get();
  }
  models::CausalLM& model = *model_in;
  const std::string mdir = cfg["model"].get<std::string>();
  auto tok = text::Tokenizer::from_model_dir(mdir);
  std::optional<text::ChatTemplate> chat;
  if (cfg["chat"].get<bool>()) chat = text::ChatTemplate::from_model_dir(mdir);
  eval::PromptStyle style;
  style.chat = chat ? &*chat : nullptr;
  style.enable_thinking = cfg["thinking"].get<bool>();

  const json& ce = cfg["eval"];
  std::vector<double> alphas;
  if (ce["alphas"].is_null()) alphas = {adapters::default_alpha(model.recurrent_arch())};
  else alphas = ce["alphas"].get<std::vector<double>>();
  if (alphas.empty()) throw Error("experiment config: eval.alphas is empty");
  EvalOptions eo;
  eo.max_new_tokens = ce["max_new_tokens"].get<int64_t>();
  eo.samples = ce["samples"].get<int64_t>();
  eo.ks = ce["ks"].get<std::vector<int64_t>>();
  eo.check = check;
  eo.sampling.temperature = cfg["collect"]["temperature"].get<double>();
  eo.sampling.top_p = cfg["collect"]["top_p"].get<double>();
  auto cond_name = [](double a) {
    char b[64];
    snprintf(b, sizeof b, "s0@%g", a);
    return std::string(b);
  };

  // Base, once.
  std::fprintf(stderr, "experiment: base model on %zu held-out problems\n", eval_tasks.size());
  eo.meta = {{"condition", "base"}};
  evaluate(model, tok, style, eval_tasks, {{"base", std::nullopt, std::nullopt}}, sandbox, eo, (out / "base").string());
  const auto base_results = read_jsonl((out / "base" / "results.jsonl").string());

  json seeds_out = json::array();
  std::map<double, std::vector<double>> pass_by_alpha;  // alpha -> per-seed pass@1 (%)
  std::map<double, std::vector<int64_t>> divergence;
  std::map<double, int64_t> flips_up, flips_down;
  std::map<double, std::vector<double>> mcnemar;  // per seed, exact McNemar p vs base
  std::vector<int64_t> kept_per_seed;
  for (const auto& sj : cfg["seeds"]) {
    const uint64_t seed = sj.get<uint64_t>();
    const fs::path sd = out / ("seed_" + std::to_string(seed));
    fs::create_directories(sd);
    std::fprintf(stderr, "experiment: seed %llu: collect on %zu training problems\n", static_cast<unsigned long long>(seed),
                 train_tasks.size());
    CollectOptions co;
    const json& cc = cfg["collect"];
    co.samples = cc["samples"].get<int64_t>();
    co.keep = cc["keep"].get<int64_t>();
    co.sampling = {cc["max_new_tokens"].get<int64_t>(), cc["temperature"].get<double>(), cc["top_p"].get<double>(),
                   cc["top_k"].get<int64_t>(), seed};
    co.check = check;
    co.check_all = cc["check_all"].get<bool>();
    auto cs = collect(model, tok, style, train_tasks, nullptr, sandbox, co, (sd / "train.jsonl").string());
    json seed_rec = {{"seed", seed}, {"collect", cs.to_json()}};
    kept_per_seed.push_back(cs.kept);
    if (cs.kept == 0) {
      std::fprintf(stderr, "experiment: seed %llu: no verified solution was found; nothing to train on\n",
                   static_cast<unsigned long long>(seed));
      seed_rec["error"] = "no verified training solutions";
      seeds_out.push_back(seed_rec);
      continue;
    }
    // Train (resumes from the checkpoint of a killed run; skipped when already finished).
    const fs::path states_dir = sd / "states";
    if (!fs::exists(sd / "train.done")) {
      const json& ct = cfg["training"];
      train::TrainConfig tc;
      tc.steps = ct["steps"].get<int64_t>();
      tc.lr = ct["lr"].get<double>();
      tc.l2 = ct["l2"].get<double>();
      tc.grad_clip = ct["clip"].get<double>();
      tc.layers = ct["layers"].get<std::string>();
      tc.max_length = ct["max_length"].get<int64_t>();
      tc.normalize = ct["normalize"].get<bool>();
      tc.alpha_in_training = ct["alpha_in_training"].get<bool>();
      tc.seed = seed;
      train::DataOptions dopt;
      dopt.max_length = tc.max_length;
      auto data = train::load_jsonl((sd / "train.jsonl").string(), tok, nullptr, dopt);
      std::fprintf(stderr, "experiment: seed %llu: train on %zu examples, %lld steps\n", static_cast<unsigned long long>(seed),
                   data.examples.size(), static_cast<long long>(tc.steps));
      train::Trainer trainer(model, std::move(data.examples), tc);
      const bool resume = fs::exists(states_dir / "checkpoint.safetensors");
      trainer.train(states_dir.string(), resume, [&](const train::StepReport& r) {
        std::fprintf(stderr, "  step %lld/%lld loss %.4f |g| %.3g %.0f tok/s ETA %.0fs\n", static_cast<long long>(r.step),
                     static_cast<long long>(r.steps), r.loss, r.grad_norm, r.tokens_per_s, r.eta_seconds);
      });
      io::write_file_atomic((sd / "train.done").string(), "");
    }
    auto set = adapters::load_state_set(states_dir.string(), model);
    seed_rec["final_loss"] = set.config.value("final_loss", json());
    seed_rec["state_bytes"] = set.num_bytes();
    std::vector<Condition> conds;
    for (double a : alphas) conds.push_back({cond_name(a), set.scaled(a), a});
    std::fprintf(stderr, "experiment: seed %llu: evaluate\n", static_cast<unsigned long long>(seed));
    eo.meta = {{"seed", seed}, {"states", states_dir.string()}};
    evaluate(model, tok, style, eval_tasks, conds, sandbox, eo, (sd / "eval").string());
    // Against base: pass@1, flips and first-character divergence.
    auto res = base_results;
    for (auto& r : read_jsonl((sd / "eval" / "results.jsonl").string())) res.push_back(r);
    std::vector<std::string> order = {"base"};
    for (double a : alphas) order.push_back(cond_name(a));
    json s = summarize(res, order, eo.ks);
    seed_rec["conditions"] = s["conditions"];
    for (size_t i = 1; i < order.size(); ++i) {
      const json& c = s["conditions"][i];
      double a = alphas[i - 1];
      pass_by_alpha[a].push_back(100.0 * c["pass@1"].get<double>());
      flips_up[a] += static_cast<int64_t>(c["fail_to_pass"].size());
      flips_down[a] += static_cast<int64_t>(c["pass_to_fail"].size());
      mcnemar[a].push_back(eval::mcnemar_exact_p(static_cast<int64_t>(c["fail_to_pass"].size()),
                                           static_cast<int64_t>(c["pass_to_fail"].size())));
      for (auto& p : c["first_char_divergence"]["positions"]) divergence[a].push_back(p.get<int64_t>());
    }
    seeds_out.push_back(seed_rec);
  }

  // Statistics over seeds.
  int64_t base_pass = 0;
  for (auto& r : base_results) base_pass += r["passed"].get<bool>();
  const double base_pct = 100.0 * static_cast<double>(base_pass) / static_cast<double>(eval_tasks.size());
  json methods = json::array();
  for (double a : alphas) {
    const auto& v = pass_by_alpha[a];
    json m = {{"name", cond_name(a)}, {"alpha", a}, {"seeds", static_cast<int64_t>(v.size())}, {"pass@1_per_seed", v}};
    if (!v.empty()) {
      std::vector<double> d;
      for (double x : v) d.push_back(x - base_pct);
      m["pass@1_mean"] = eval::mean(v);
      m["pass@1_std"] = eval::stddev(v);
      m["delta_pp_mean"] = eval::mean(d);
      m["delta_pp_std"] = eval::stddev(d);
      if (v.size() >= 2) {
        // Greedy base is deterministic: the same value for every seed (zero variance), where
        // Welch's test reduces to a one-sample t-test of the deltas.
        auto t = eval::welch_t_test(v, std::vector<double>(v.size(), base_pct));
        m["welch_vs_base"] = {{"t", t.t}, {"df", t.df}, {"p", t.p}, {"zero_variance", eval::stddev(v) == 0}};
      }
    }
    if (!mcnemar[a].empty()) {
      m["mcnemar_p_per_seed"] = mcnemar[a];
      m["mcnemar_p_max"] = *std::max_element(mcnemar[a].begin(), mcnemar[a].end());
    }
    m["fail_to_pass"] = flips_up[a];
    m["pass_to_fail"] = flips_down[a];
    auto& dv = divergence[a];
    if (!dv.empty()) {
      std::sort(dv.begin(), dv.end());
      m["first_char_divergence"] = {
          {"flips", static_cast<int64_t>(dv.size())},
          {"median", dv[dv.size() / 2]},
          {"at_position_0", static_cast<double>(std::count(dv.begin(), dv.end(), 0)) / static_cast<double>(dv.size())}};
    }
    methods.push_back(m);
  }
  json paired = json::array();
  for (size_t i = 0; i < alphas.size(); ++i)
    for (size_t j = i + 1; j < alphas.size(); ++j) {
      const auto &a = pass_by_alpha[alphas[i]], &b = pass_by_alpha[alphas[j]];
      if (a.size() >= 2 && a.size() == b.size()) {
        auto t = eval::paired_t_test(a, b);
        paired.push_back({{"a", cond_name(alphas[i])}, {"b", cond_name(alphas[j])}, {"mean_diff_pp", t.mean_diff},
                          {"t", t.t}, {"df", t.df}, {"p", t.p}});
      }
    }
  json summary = {{"base", {{"pass@1", base_pct}, {"passed", base_pass}, {"problems", static_cast<int64_t>(eval_tasks.size())}}},
                  {"methods", methods},
                  {"paired_tests", paired},
                  {"seeds", seeds_out},
                  {"train_problems", static_cast<int64_t>(train_tasks.size())},
                  {"config", cfg}};
  io::write_file_atomic((out / "summary.json").string(), summary.dump(2) + "\n");

  // Charts and report.
  io::write_file_atomic((out / "deltas.svg").string(), experiment_deltas_chart(summary));
  io::write_file_atomic((out / "alpha_sweep.svg").string(), experiment_alpha_chart(summary));
  io::write_file_atomic((out / "report.md").string(), experiment_report(summary, sandbox.isolated()));
  return summary;
}

}  // namespace s0::pipeline
