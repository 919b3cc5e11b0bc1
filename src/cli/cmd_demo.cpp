// `s0 demo`: the main job on the built-in default. The whole S0 pipeline on the project's own
// small pretrained hybrid (assets/builtin, see tools/builtin/README.md): evaluate the base
// model on held-out problems, then over several seeds collect verified solutions on the
// training problems (sampled from the frozen model, executed in the sandbox), train a state
// set, evaluate it; print base vs S0 with std and Welch's p, the state-set size and the decode
// speed with and without S0.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "s0/adapters/state_set.h"
#include "s0/eval/prompt.h"
#include "s0/eval/tasks.h"
#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/models/model.h"
#include "s0/pipeline/experiment.h"
#include "s0/text/chat_template.h"
#include "s0/text/tokenizer.h"
#include "s0/util/error.h"

namespace s0::cli {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// --assets, else $S0_ASSETS, else the source tree's assets/ (compiled in), else <exe>/../assets.
std::string find_assets(const std::string& flag) {
  std::vector<std::string> tries;
  if (!flag.empty()) tries.push_back(flag);
  if (const char* e = std::getenv("S0_ASSETS")) tries.push_back(e);
#ifdef S0_ASSETS_DIR
  tries.push_back(S0_ASSETS_DIR);
#endif
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) tries.push_back((fs::path(std::string(buf, static_cast<size_t>(n))).parent_path().parent_path() / "assets").string());
  for (const auto& t : tries)
    if (fs::exists(fs::path(t) / "builtin" / "model" / "config.json")) return t;
  std::string msg = "the built-in model was not found; looked in:";
  for (const auto& t : tries) msg += " " + t + "/builtin/model";
  throw Error(msg + " (pass --assets DIR or set S0_ASSETS)");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

Action add_demo(CLI::App& app) {
  struct Opts {
    std::string out = "out/demo", assets;
    int threads = 0;
    int64_t seeds = 5, train_problems = 0, eval_problems = 0, samples = 16, steps = 20, max_new = 128;
    double alpha = -1;
    bool quick = false, unsafe_exec = false;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--out", o->out, "Working directory for the demo's files (rerun resumes)")->capture_default_str();
  app.add_option("--assets", o->assets, "Folder holding builtin/model and builtin/tasks");
  app.add_option("--seeds", o->seeds, "Seeds (collect -> train -> eval each)")->capture_default_str();
  app.add_option("--train-problems", o->train_problems, "Use the first N training problems (0: all)");
  app.add_option("--eval-problems", o->eval_problems, "Use the first N held-out problems (0: all)");
  app.add_option("--samples", o->samples, "Completions sampled per training problem")->capture_default_str();
  app.add_option("--steps", o->steps, "S0 training steps")->capture_default_str();
  app.add_option("--alpha", o->alpha, "Inference scale of the states (default: the built-in model's)");
  app.add_option("--max-new-tokens", o->max_new, "New tokens per completion")->capture_default_str();
  app.add_option("--threads", o->threads, "Intra-op threads (0 = all cores)")->capture_default_str();
  app.add_flag("--quick", o->quick, "A fast smoke run: 1 seed, 8 training and 10 held-out problems, 4 samples, 2 steps");
  app.add_flag("--unsafe-exec", o->unsafe_exec, "Run model code without bubblewrap when it is unavailable");
  return [o]() {
    if (o->quick) o->seeds = 1, o->train_problems = 8, o->eval_problems = 10, o->samples = 4, o->steps = 2;
    if (o->seeds < 1) throw Error("--seeds must be >= 1");
    const fs::path assets = fs::path(find_assets(o->assets)) / "builtin";
    const fs::path out = fs::absolute(o->out);
    fs::create_directories(out);
    const std::string model_dir = (assets / "model").string();
    json info = json::parse(io::read_file((assets / "model" / "builtin.json").string()));
    const double alpha = o->alpha >= 0 ? o->alpha : info.value("alpha", 0.07);

    // One task file, training problems first (the experiment selects by index).
    auto train = eval::read_tasks(eval::TaskKind::HumanEval, (assets / "tasks" / "train.jsonl").string());
    auto held = eval::read_tasks(eval::TaskKind::HumanEval, (assets / "tasks" / "eval.jsonl").string());
    const int64_t ntr = o->train_problems > 0 ? std::min<int64_t>(o->train_problems, train.size()) : train.size();
    const int64_t nev = o->eval_problems > 0 ? std::min<int64_t>(o->eval_problems, held.size()) : held.size();
    {
      std::string all = eval::read_text_file((assets / "tasks" / "train.jsonl").string());
      if (!all.empty() && all.back() != '\n') all += '\n';
      all += eval::read_text_file((assets / "tasks" / "eval.jsonl").string());
      io::write_file_atomic((out / "tasks.jsonl").string(), all);
    }
    json seeds = json::array();
    for (int64_t s = 0; s < o->seeds; ++s) seeds.push_back(s);
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
                {"threads", o->threads},
                {"unsafe_exec", o->unsafe_exec},
                {"timeout", 10.0},
                {"workers", 2},
                {"collect", {{"samples", o->samples}, {"keep", 1}, {"check_all", false}, {"temperature", 0.7},
                             {"top_p", 0.95}, {"top_k", 0}, {"max_new_tokens", o->max_new}}},
                {"training", {{"steps", o->steps}, {"lr", 1e-3}, {"l2", 5e-4}, {"clip", 1.0}, {"layers", "all"},
                              {"max_length", 2048}, {"normalize", false}, {"alpha_in_training", false}}},
                {"eval", {{"alphas", {alpha}}, {"max_new_tokens", o->max_new}, {"samples", 0}, {"ks", {1}}}},
                {"out", (out / "experiment").string()}};
    models::configure_runtime(o->threads);
    auto model = models::load_model(model_dir, at::kFloat);
    std::fprintf(stderr, "s0 demo: built-in model %s (%s), %lld training / %lld held-out problems, %lld seeds\n",
                 model_dir.c_str(), info.value("description", std::string("")).c_str(), static_cast<long long>(ntr),
                 static_cast<long long>(nev), static_cast<long long>(o->seeds));
    json summary = pipeline::run_experiment(cfg, model.get());

    // Decode speed with and without S0 (seed 0's states), same prompt, same length, alternating.
    std::fprintf(stderr, "s0 demo: decode speed with and without S0\n");
    const fs::path states_dir = out / "experiment" / "seed_0" / "states";
    json speed = json(nullptr);
    int64_t state_bytes = 0;
    if (fs::exists(states_dir / "states.safetensors")) {
      auto set = adapters::load_state_set(states_dir.string(), *model);
      state_bytes = set.num_bytes();
      auto states = set.scaled(alpha);
      auto tok = text::Tokenizer::from_model_dir(model_dir);
      auto chat = text::ChatTemplate::from_model_dir(model_dir);
      eval::PromptStyle style;
      style.chat = &chat;
      auto ids = tok.encode(eval::render_prompt(held[0], style), true);
      generate::GenerateOptions g;
      g.max_new_tokens = 128;
      g.eos_ids = {-1};
      std::vector<double> rb, rs;
      for (int rep = 0; rep < 3; ++rep) {
        auto b = generate::generate(*model, {ids}, g)[0];
        auto s = generate::generate(*model, {ids}, g, &states)[0];
        rb.push_back((b.tokens.size() - 1) / std::max(b.decode_seconds, 1e-9));
        rs.push_back((s.tokens.size() - 1) / std::max(s.decode_seconds, 1e-9));
      }
      speed = {{"base", median(rb)}, {"s0", median(rs)}, {"s0_over_base", median(rs) / median(rb)}};
    }

    const json& m = summary["methods"][0];
    const double base = summary["base"]["pass@1"].get<double>();
    json result = {{"model", model_dir},
                   {"alpha", alpha},
                   {"train_problems", ntr},
                   {"eval_problems", nev},
                   {"seeds", o->seeds},
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
                   {"report", (out / "experiment" / "report.md").string()},
                   {"state_set", states_dir.string()}};
    io::write_file_atomic((out / "demo.json").string(), result.dump(2) + "\n");
    auto f1 = [](const json& v) {
      char b[32];
      if (!v.is_number()) return std::string("n/a");
      snprintf(b, sizeof b, "%.1f", v.get<double>());
      return std::string(b);
    };
    std::printf("\nS0 tuning on the built-in model: greedy pass@1 on %lld held-out problems, %lld seed%s, alpha %g\n\n",
                static_cast<long long>(nev), static_cast<long long>(o->seeds), o->seeds > 1 ? "s" : "", alpha);
    std::printf("| base | S0 (mean ± std) | delta pp (mean ± std) | Welch p | McNemar p (max over seeds) | state set | decode tok/s base / S0 |\n");
    std::printf("|---|---|---|---|---|---|---|\n");
    auto pv = [](const json& v) {
      char b[32] = "n/a";
      if (v.is_number()) snprintf(b, sizeof b, "%.2g", v.get<double>());
      return std::string(b);
    };
    const std::string welch = result["welch_zero_variance"].is_boolean() && result["welch_zero_variance"].get<bool>()
                                  ? "undefined (std 0)"
                                  : pv(result["welch_p"]);
    std::printf("| %s%% | %s ± %s%% | %s ± %s | %s | %s | %.1f KB | %s / %s |\n", f1(base).c_str(),
                f1(result["s0_pass@1_mean"]).c_str(), f1(result["s0_pass@1_std"]).c_str(),
                f1(result["delta_pp_mean"]).c_str(), f1(result["delta_pp_std"]).c_str(), welch.c_str(),
                pv(result["mcnemar_p_max"]).c_str(), state_bytes / 1024.0,
                speed.is_null() ? "n/a" : f1(speed["base"]).c_str(), speed.is_null() ? "n/a" : f1(speed["s0"]).c_str());
    std::printf("\nFAIL->PASS %lld, PASS->FAIL %lld (summed over seeds)\n", static_cast<long long>(result["fail_to_pass"].get<int64_t>()),
                static_cast<long long>(result["pass_to_fail"].get<int64_t>()));
    std::printf("\nreport:    %s\nstate set: %s\nsummary:   %s\n", result["report"].get<std::string>().c_str(),
                states_dir.string().c_str(), (out / "demo.json").string().c_str());
    return 0;
  };
}

}  // namespace s0::cli
