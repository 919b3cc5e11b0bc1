#include "s0/pipeline/experiment.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <filesystem>
#include <map>
#include <random>

#include "s0/adapters/lora.h"
#include "s0/adapters/state_offset.h"
#include "s0/adapters/state_set.h"
#include "s0/dist/dist.h"
#include "s0/eval/stats.h"
#include "s0/eval/prompt.h"
#include "s0/eval/tasks.h"
#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/pipeline/analysis.h"
#include "s0/pipeline/collect.h"
#include "s0/pipeline/evaluate.h"
#include "s0/pipeline/report.h"
#include "s0/train/data.h"
#include "s0/train/baselines.h"
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
          {"methods", nullptr},
          {"train_subset", 0},
          {"decode_speed_tokens", 128},
          {"analyses", nullptr},
          {"out", nullptr}};
}

// Overlays `user` on `base`, refusing keys `base` does not have.
void merge(json& base, const json& user, const std::string& where) {
  if (!user.is_object()) throw Error(where + ": expected a JSON object");
  for (auto& [k, v] : user.items()) {
    if (!base.contains(k)) throw Error(where + ": unknown key \"" + k + "\"");
    if (base[k].is_object() && k != "analyses") merge(base[k], v, where + "." + k);
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
  return experiment_config_from_json(user, fs::absolute(path).parent_path().string(), path,
                                     (fs::absolute(path).parent_path() / fs::path(path).stem()).string());
}

json experiment_config_from_json(const json& user, const std::string& base_dir, const std::string& origin,
                                 const std::string& default_out) {
  const std::string& path = origin;
  json cfg = defaults();
  merge(cfg, user, path);
  for (const char* k : {"model", "tasks"})
    if (!cfg[k].is_string()) throw Error(path + ": \"" + std::string(k) + "\" (a path) is required");
  if (!cfg["seeds"].is_array() || cfg["seeds"].empty()) throw Error(path + ": \"seeds\" must be a non-empty array");
  fs::path dir = fs::absolute(base_dir);
  cfg["model"] = resolve(dir, cfg["model"]);
  cfg["tasks"] = resolve(dir, cfg["tasks"]);
  cfg["db_dir"] = resolve(dir, cfg["db_dir"]);
  if (cfg["out"].is_null()) {
    if (default_out.empty()) throw Error(path + ": \"out\" (a folder) is required");
    cfg["out"] = default_out;
  } else {
    cfg["out"] = resolve(dir, cfg["out"]);
  }
  return cfg;
}

namespace {

// One method of an experiment: what is trained per seed and the conditions it is evaluated
// under (S0: one per alpha; state offset: one per scale; LoRA: one).
struct MethodSpec {
  std::string name, kind;  // kind: "s0" | "lora" | "offset" | "prefix"
  train::TrainConfig tc;
  adapters::LoraConfig lora;
  adapters::PrefixConfig prefix;
  std::vector<double> scales;  // s0: alphas; offset: scales; lora: {1}
  int64_t examples = 0;        // > 0: train on a seeded random subset of this many collected examples
  // Condition names: S0 "name@alpha" (one per alpha); LoRA "name"; offset "name", or
  // "name@scale" when it has several scales or one other than 1.
  std::string condition(double x) const {
    if (kind == "lora" || kind == "prefix" || (kind == "offset" && scales.size() == 1 && x == 1.0)) return name;
    char b[64];
    snprintf(b, sizeof b, "%s@%g", name.c_str(), x);
    return b;
  }
};

std::vector<MethodSpec> method_specs(const json& cfg, const models::CausalLM& model) {
  json list = cfg["methods"].is_null() ? json::array({{{"name", "s0"}, {"kind", "s0"}}}) : cfg["methods"];
  if (!list.is_array() || list.empty()) throw Error("experiment config: \"methods\" must be a non-empty array");
  const json& ct = cfg["training"];
  std::vector<MethodSpec> out;
  std::set<std::string> names;
  for (const auto& m : list) {
    static const std::set<std::string> keys = {"name", "kind", "alphas", "scales", "steps", "lr", "l2", "clip", "batch",
                                               "layers", "max_length", "rank", "lora_alpha", "targets",
                                               "normalize", "alpha_in_training", "examples", "virtual_tokens",
                                               "prefix_projection", "encoder_hidden_size"};
    if (!m.is_object()) throw Error("experiment config: each of \"methods\" must be an object");
    for (auto& [k, v] : m.items())
      if (!keys.count(k)) throw Error("experiment config: methods: unknown key \"" + k + "\"");
    MethodSpec s;
    auto str = [&](const std::string& k, const std::string& def) {
      if (!m.contains(k)) return def;
      if (!m[k].is_string()) throw Error("experiment config: methods: \"" + k + "\" must be a string, found " + m[k].dump());
      return m[k].get<std::string>();
    };
    s.kind = str("kind", str("name", "s0"));
    if (s.kind != "s0" && s.kind != "lora" && s.kind != "offset" && s.kind != "prefix")
      throw Error("experiment config: methods: kind \"" + s.kind + "\" (expected s0, lora, offset or prefix)");
    s.name = str("name", s.kind);
    if ((s.kind == "s0" || s.kind == "offset") && model.recurrent_layers().empty())
      throw Error("experiment config: methods: \"" + s.name + "\" (" + s.kind + ") needs recurrent layers; this " +
                  model.model_type() + " model has none (use lora or prefix methods)");
    if (s.name.empty() || s.name.find_first_of("/@ ") != std::string::npos || s.name == "base" || !names.insert(s.name).second)
      throw Error("experiment config: methods: name \"" + s.name + "\" is empty, repeated, \"base\" or has / @ or space");
    auto get = [&](const char* k) { return m.contains(k) ? m[k] : ct.value(k, json()); };
    try {
      s.tc.steps = get("steps").get<int64_t>();
      s.tc.lr = get("lr").get<double>();
      s.tc.batch = m.value("batch", int64_t{0});
      if (s.kind == "lora") {  // the paper's LoRA schedule, not S0's "training" block, unless set here
        const auto paper = adapters::paper_lora_schedule(model);
        s.tc.steps = m.value("steps", paper.steps);
        s.tc.lr = m.value("lr", paper.lr);
        s.tc.batch = m.value("batch", paper.batch);
      }
      // The baselines have no L2 term unless asked (the paper's LoRA has none).
      s.tc.l2 = m.contains("l2") ? m["l2"].get<double>() : s.kind == "s0" ? ct["l2"].get<double>() : 0.0;
      s.tc.grad_clip = get("clip").get<double>();
      s.tc.layers = get("layers").get<std::string>();
      s.tc.max_length = get("max_length").get<int64_t>();
      s.tc.normalize = get("normalize").get<bool>();
      s.tc.alpha_in_training = get("alpha_in_training").get<bool>();
      s.examples = m.value("examples", int64_t{0});
      if (s.examples < 0) throw Error("experiment config: methods: \"" + s.name + "\": \"examples\" must be >= 0");
      if (s.kind == "lora") {
        s.lora.r = m.value("rank", int64_t{24});
        s.lora.lora_alpha = m.value("lora_alpha", 2.0 * static_cast<double>(s.lora.r));
        if (m.contains("targets") && !m["targets"].is_null()) s.lora.target_modules = m["targets"].get<std::vector<std::string>>();
        else s.lora.target_modules = adapters::default_lora_targets(model);
        s.scales = {1.0};
      } else if (s.kind == "prefix") {
        s.prefix.num_virtual_tokens = m.value("virtual_tokens", int64_t{30});
        s.prefix.prefix_projection = m.value("prefix_projection", true);
        s.prefix.encoder_hidden_size = m.value("encoder_hidden_size", int64_t{0});
        if (s.prefix.num_virtual_tokens <= 0 || s.prefix.encoder_hidden_size < 0)
          throw Error("experiment config: methods: \"" + s.name +
                      "\": virtual_tokens must be positive and encoder_hidden_size >= 0");
        s.scales = {1.0};
      } else if (s.kind == "s0") {
        const json& a = m.contains("alphas") ? m["alphas"] : cfg["eval"]["alphas"];
        s.scales = a.is_null() ? std::vector<double>{adapters::default_alpha(model.recurrent_arch())} : a.get<std::vector<double>>();
      } else {
        s.scales = m.contains("scales") ? m["scales"].get<std::vector<double>>() : std::vector<double>{1.0};
      }
    } catch (const json::exception& e) {
      throw Error("experiment config: methods: \"" + s.name + "\": " + e.what());
    }
    if (s.scales.empty()) throw Error("experiment config: methods: \"" + s.name + "\" has no alphas/scales");
    out.push_back(std::move(s));
  }
  return out;
}

// A trained method of one seed, loaded: the adapter of each of its conditions.
struct Trained {
  std::vector<std::pair<std::string, std::shared_ptr<const models::Adapter>>> conditions;
  std::vector<double> scales;
  int64_t params = 0, bytes = 0;
  json final_loss;
};

Trained load_trained(const MethodSpec& m, const std::string& dir, const models::CausalLM& model) {
  Trained t;
  if (m.kind == "s0") {
    auto set = adapters::load_state_set(dir, model);
    for (double a : m.scales) t.conditions.push_back({m.condition(a), set.adapter(a)});
    t.params = set.num_bytes() / 4, t.bytes = set.num_bytes();
    t.final_loss = set.config.value("final_loss", json());
  } else if (m.kind == "prefix") {
    auto set = adapters::load_prefix(dir, model);
    t.conditions.push_back({m.condition(1.0), set.adapter(model.attention_layers())});
    t.params = set.s0_info.value("train_params", set.num_params()), t.bytes = set.num_bytes();
    t.final_loss = set.s0_info.value("final_loss", json());
  } else if (m.kind == "lora") {
    auto set = adapters::load_lora(dir, model);
    t.conditions.push_back({m.condition(1.0), set.adapter()});
    t.params = set.num_params(), t.bytes = set.num_bytes();
    t.final_loss = set.s0_info.value("final_loss", json());
  } else {
    auto set = adapters::load_offset_set(dir, model);
    for (double x : m.scales) t.conditions.push_back({m.condition(x), set.adapter(x)});
    t.params = set.num_params(), t.bytes = set.num_bytes();
    t.final_loss = set.config.value("final_loss", json());
  }
  t.scales = m.scales;
  return t;
}

json analysis_defaults() {
  return {{"persistence", {{"prompts", 16}, {"max_positions", 0}}},
          {"divergence", json::object()},
          {"probe", {{"folds", 5}, {"pca_dims", 64}, {"l2", 1.0}, {"seed", 0}}}};
}

// An analysis's options: `true` or an object overriding `defaults` (unknown keys refused).
json analysis_options(const json& v, json defaults, const std::string& name) {
  if (v.is_boolean()) return defaults;
  if (!v.is_object()) throw Error("experiment config: analyses." + name + ": expected true or an object");
  for (auto& [k, x] : v.items()) {
    if (!defaults.contains(k)) throw Error("experiment config: analyses." + name + ": unknown key \"" + k + "\"");
    defaults[k] = x;
  }
  return defaults;
}

// Refuses (before any work) an "analyses" value that is not an object of known analyses with
// known options.
void check_analyses(const json& acfg) {
  if (acfg.is_null()) return;
  if (!acfg.is_object()) throw Error("experiment config: \"analyses\" must be an object");
  const json defaults = analysis_defaults();
  for (auto& [k, v] : acfg.items()) {
    if (!defaults.contains(k))
      throw Error("experiment config: analyses: unknown analysis \"" + k + "\" (expected persistence, divergence, probe)");
    analysis_options(v, defaults[k], k);
  }
}

// The analyses an experiment's config asks for (analysis.h), on the held-out problems' prompts
// and the first S0 method's state set of the first seed that has one (at its first alpha).
// Each writes OUT/analysis/NAME.{json,svg,md}; a result whose options match is reused.
json experiment_analyses(const json& cfg, models::CausalLM& model, const text::Tokenizer& tok, const eval::PromptStyle& style,
                         const std::vector<eval::Task>& tasks, const std::vector<json>& base_results,
                         const std::vector<MethodSpec>& specs, const fs::path& out) {
  const json& acfg = cfg["analyses"];
  const json defaults = analysis_defaults();
  check_analyses(acfg);
  const fs::path dir = out / "analysis";
  json results = json::object();
  auto prompts = [&](int64_t limit) {
    std::vector<std::vector<int64_t>> p;
    for (const auto& t : tasks) {
      if (limit > 0 && static_cast<int64_t>(p.size()) >= limit) break;
      p.push_back(tok.encode(eval::render_prompt(t, style), true));
    }
    return p;
  };
  auto cached = [&](const std::string& name, const json& options) -> std::optional<json> {
    const fs::path f = dir / (name + ".json");
    if (!fs::exists(f)) return std::nullopt;
    json r = json::parse(io::read_file(f.string()));
    if (r.value("options", json()) != options) return std::nullopt;
    return r;
  };
  for (auto& [name, v] : acfg.items()) {
    if (v.is_boolean() && !v.get<bool>()) continue;
    const json options = analysis_options(v, defaults[name], name);
    if (auto r = cached(name, options)) {
      results[name] = *r;
      continue;
    }
    json r;
    std::fprintf(stderr, "experiment: analysis %s\n", name.c_str());
    if (name == "persistence") {
      // The first S0 method's states from the first seed that trained it.
      const MethodSpec* m = nullptr;
      for (const auto& sp : specs)
        if (sp.kind == "s0" && !m) m = &sp;
      std::optional<std::string> states;
      for (const auto& sj : cfg["seeds"]) {
        if (!m || states) break;
        const fs::path d = out / ("seed_" + std::to_string(sj.get<uint64_t>())) / (m->name == "s0" ? std::string("states") : m->name);
        if (fs::exists(d / "states.safetensors")) states = d.string();
      }
      if (!states) {
        std::fprintf(stderr, "experiment: analysis persistence skipped: no S0 state set was trained\n");
        continue;
      }
      auto set = adapters::load_state_set(*states, model);
      r = persistence(model, prompts(options["prompts"].get<int64_t>()), set.adapter(m->scales[0]),
                      options["max_positions"].get<int64_t>());
      r["states"] = *states, r["alpha"] = m->scales[0], r["condition"] = m->condition(m->scales[0]);
    } else if (name == "divergence") {
      r = divergence(read_eval_output(out.string()), &tok);
    } else {
      std::vector<int> labels;
      std::map<std::string, bool> passed;
      for (const auto& b : base_results) passed[b["task_id"].get<std::string>()] = b["passed"].get<bool>();
      for (const auto& t : tasks) labels.push_back(passed.count(t.id) && passed[t.id] ? 1 : 0);
      ProbeOptions po;
      po.folds = options["folds"].get<int64_t>(), po.pca_dims = options["pca_dims"].get<int64_t>();
      po.l2 = options["l2"].get<double>(), po.seed = options["seed"].get<uint64_t>();
      try {
        r = probe(probe_features(model, prompts(0)), labels, po);
      } catch (const Error& e) {
        // Too few passing (or failing) problems is a property of the data, not a failure.
        std::fprintf(stderr, "experiment: analysis probe skipped: %s\n", e.what());
        continue;
      }
    }
    r["options"] = options;
    write_analysis(dir.string(), name, r);
    results[name] = r;
  }
  return results;
}

// The files of a trained unit's folder (recursively; not temporary files), sorted.
std::vector<std::string> unit_files(const fs::path& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename().string().find(".tmp.") == std::string::npos)
      out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool rel_under(const fs::path& p, const fs::path& dir) {
  const std::string a = p.lexically_normal().string(), d = dir.lexically_normal().string() + "/";
  return a.rfind(d, 0) == 0;
}

// (name, bytes) pairs in one string: per file its name's and content's lengths (8 bytes
// each, native order: the ranks of a job run the same binary) and the bytes.
std::string pack_files(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string b;
  auto put = [&b](const std::string& s) {
    const uint64_t n = s.size();
    b.append(reinterpret_cast<const char*>(&n), sizeof n);
    b += s;
  };
  for (const auto& [name, content] : files) put(name), put(content);
  return b;
}

std::vector<std::pair<std::string, std::string>> unpack_files(const std::string& b) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t off = 0;
  auto get = [&]() {
    uint64_t n = 0;
    if (off + sizeof n > b.size()) throw Error("experiment: a truncated file list from another rank");
    std::memcpy(&n, b.data() + off, sizeof n);
    off += sizeof n;
    if (n > b.size() - off) throw Error("experiment: a truncated file list from another rank");
    std::string s = b.substr(off, n);
    off += n;
    return s;
  };
  while (off < b.size()) {
    std::string name = get();
    out.push_back({std::move(name), get()});
  }
  return out;
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

json run_experiment(const json& cfg_in, models::CausalLM* model_in) {
  // Keys a caller's config leaves out take their defaults (checked again by merge()).
  json cfg = defaults();
  merge(cfg, cfg_in, "experiment config");
  const fs::path out = cfg["out"].get<std::string>();
  dist::World* world = dist::current();
  const int W = world ? world->size() : 1, R = world ? world->rank() : 0;
  auto check_config = [&] {
    fs::create_directories(out);
    // The config this output belongs to: a different one is refused (resume safety).
    const std::string p = (out / "experiment.json").string();
    if (fs::exists(p)) {
      json old = json::parse(io::read_file(p));
      // Analyses run after the protocol and do not change its results: they may be added or
      // changed on a finished experiment.
      json a = old, b = cfg;
      a.erase("analyses"), b.erase("analyses");
      if (a != b)
        throw Error(p + " holds another experiment's config; use another \"out\" or delete the folder");
    } else {
      io::write_file_atomic(p, cfg.dump(2) + "\n");
    }
  };
  if (world) world->agree("experiment config", check_config);  // on every rank's disk
  else check_config();
  check_analyses(cfg["analyses"]);
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

  const auto specs = method_specs(cfg, model);
  const json& ce = cfg["eval"];
  EvalOptions eo;
  eo.max_new_tokens = ce["max_new_tokens"].get<int64_t>();
  eo.samples = ce["samples"].get<int64_t>();
  eo.ks = ce["ks"].get<std::vector<int64_t>>();
  eo.check = check;
  eo.sampling.temperature = cfg["collect"]["temperature"].get<double>();
  eo.sampling.top_p = cfg["collect"]["top_p"].get<double>();
  // Every condition, in order: (method index, scale).
  std::vector<std::pair<size_t, double>> conds;
  std::vector<std::string> cond_names;
  for (size_t i = 0; i < specs.size(); ++i)
    for (double x : specs[i].scales) conds.push_back({i, x}), cond_names.push_back(specs[i].condition(x));

  // Base, once.
  if (R == 0) std::fprintf(stderr, "experiment: base model on %zu held-out problems\n", eval_tasks.size());
  eo.meta = {{"condition", "base"}};
  evaluate(model, tok, style, eval_tasks, {{"base", std::nullopt, std::nullopt}}, sandbox, eo, (out / "base").string());
  const auto base_results = read_jsonl((out / "base" / "results.jsonl").string());

  json seeds_out = json::array();
  std::map<std::string, std::vector<double>> pass_by;  // condition -> per-seed pass@1 (%)
  std::map<std::string, std::vector<int64_t>> divergence;
  std::map<std::string, int64_t> flips_up, flips_down;
  std::map<std::string, std::vector<double>> mcnemar;  // per seed, exact McNemar p vs base
  std::map<std::string, std::vector<double>> train_seconds;  // method -> per seed
  std::map<std::string, std::pair<int64_t, int64_t>> sizes;  // method -> params, bytes
  std::map<std::string, std::shared_ptr<const models::Adapter>> first_adapters;  // condition -> first seed's
  // Distributed (dist::current()): every rank walks the same stages in the same order. The
  // base model's and every seed's evaluation and every seed's collection are sharded by
  // evaluate() and collect() (rank 0 writes the merged files); the training runs, one per
  // (seed, method), are whole units spread over the ranks, each trained by one rank alone
  // (so it is bit-identical to the single process's), whose files are then sent to the ranks
  // that lack them. Rank 0 writes the summary, charts, report and analyses.
  // Phase 1: collect on every seed.
  struct SeedRun {
    uint64_t seed;
    fs::path sd;
    CollectSummary cs;
  };
  std::vector<SeedRun> seed_runs;
  for (const auto& sj : cfg["seeds"]) {
    const uint64_t seed = sj.get<uint64_t>();
    const fs::path sd = out / ("seed_" + std::to_string(seed));
    fs::create_directories(sd);
    // Optionally a seeded random subset of the training pool per seed: the seeds then differ
    // in which problems their data comes from, not only in the sampled completions.
    std::vector<eval::Task> pool = train_tasks;
    const int64_t subset = cfg["train_subset"].get<int64_t>();
    if (subset > 0 && subset < static_cast<int64_t>(pool.size())) {
      std::mt19937_64 rng(0x5eed0000ULL + seed);
      std::shuffle(pool.begin(), pool.end(), rng);
      pool.resize(static_cast<size_t>(subset));
      std::sort(pool.begin(), pool.end(), [](const eval::Task& a, const eval::Task& b) { return a.index < b.index; });
    }
    if (R == 0)
      std::fprintf(stderr, "experiment: seed %llu: collect on %zu training problems\n",
                   static_cast<unsigned long long>(seed), pool.size());
    CollectOptions co;
    const json& cc = cfg["collect"];
    co.samples = cc["samples"].get<int64_t>();
    co.keep = cc["keep"].get<int64_t>();
    co.sampling = {cc["max_new_tokens"].get<int64_t>(), cc["temperature"].get<double>(), cc["top_p"].get<double>(),
                   cc["top_k"].get<int64_t>(), seed};
    co.check = check;
    co.check_all = cc["check_all"].get<bool>();
    auto cs = collect(model, tok, style, pool, nullptr, sandbox, co, (sd / "train.jsonl").string());
    if (world && cs.kept > 0) {
      // Every rank may train on it: rank 0's merged file to each rank that has another.
      const std::string p = (sd / "train.jsonl").string();
      const std::string data = world->broadcast("experiment training data", R == 0 ? io::read_file(p) : std::string());
      if (R != 0 && (!fs::exists(p) || io::read_file(p) != data)) io::write_file_atomic(p, data);
    }
    seed_runs.push_back({seed, sd, cs});
  }

  // Phase 2: train every (seed, method) not trained yet (resuming from a killed run's
  // checkpoint). The S0 method named "s0" keeps the original folder names (states/, train.done).
  struct Unit {
    size_t seed_i, method_i;
    fs::path dir, done;
  };
  std::vector<Unit> units;
  for (size_t si = 0; si < seed_runs.size(); ++si) {
    if (seed_runs[si].cs.kept == 0) continue;
    for (size_t mi = 0; mi < specs.size(); ++mi) {
      const bool legacy = specs[mi].kind == "s0" && specs[mi].name == "s0";
      const fs::path& sd = seed_runs[si].sd;
      units.push_back({si, mi, sd / (legacy ? std::string("states") : specs[mi].name),
                       sd / (legacy ? std::string("train.done") : specs[mi].name + ".done")});
    }
  }
  auto trained_here = [&] {
    std::string s;
    for (const auto& u : units) s += fs::exists(u.done) ? '1' : '0';
    return s;
  };
  std::vector<std::string> trained_by =
      world ? world->all_gather("experiment trained", trained_here()) : std::vector<std::string>{trained_here()};
  // Who trains what: a unit some rank has finished is not trained again; the others go, in
  // order, to the rank with the least work so far (steps x examples per step; ties: lowest).
  std::vector<int> owner(units.size(), -1);
  std::vector<double> load(static_cast<size_t>(W), 0.0);
  for (size_t i = 0; i < units.size(); ++i) {
    for (int r = 0; r < W && owner[i] < 0; ++r)
      if (trained_by[static_cast<size_t>(r)][i] == '1') owner[i] = -2;  // done somewhere
    if (owner[i] == -2) continue;
    const MethodSpec& m = specs[units[i].method_i];
    int64_t n = seed_runs[units[i].seed_i].cs.kept;
    if (m.examples > 0) n = std::min(n, m.examples);
    const double cost = static_cast<double>(m.tc.steps) * static_cast<double>(m.tc.batch > 0 ? std::min(m.tc.batch, n) : n);
    owner[i] = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    load[static_cast<size_t>(owner[i])] += cost;
    if (world && R == 0)
      std::fprintf(stderr, "experiment: seed %llu: %s is trained by rank %d\n",
                   static_cast<unsigned long long>(seed_runs[units[i].seed_i].seed), m.name.c_str(), owner[i]);
  }
  for (size_t i = 0; i < units.size(); ++i) {
    if (owner[i] != R) continue;
    const Unit& u = units[i];
    const MethodSpec& m = specs[u.method_i];
    const uint64_t seed = seed_runs[u.seed_i].seed;
    const fs::path& sd = seed_runs[u.seed_i].sd;
    std::optional<dist::Alone> alone;  // this rank trains the unit by itself
    if (world) alone.emplace();
    train::TrainConfig tc = m.tc;
    tc.seed = seed;
    train::DataOptions dopt;
    dopt.max_length = tc.max_length;
    auto data = train::load_jsonl((sd / "train.jsonl").string(), tok, nullptr, dopt);
    if (m.examples > 0 && m.examples < static_cast<int64_t>(data.examples.size())) {
      // The same shuffle for every method of a seed: smaller subsets are nested in larger.
      std::mt19937_64 rng(0xe1a3b1e5ULL + seed);
      std::shuffle(data.examples.begin(), data.examples.end(), rng);
      data.examples.resize(static_cast<size_t>(m.examples));
    }
    const std::string who = world ? "rank " + std::to_string(R) + ": " : std::string();
    std::fprintf(stderr, "experiment: %sseed %llu: train %s on %zu examples, %lld steps\n", who.c_str(),
                 static_cast<unsigned long long>(seed), m.name.c_str(), data.examples.size(),
                 static_cast<long long>(tc.steps));
    const bool resume = fs::exists(u.dir / "checkpoint.safetensors");
    auto report = [&](const train::StepReport& r) {
      std::fprintf(stderr, "  %sstep %lld/%lld loss %.4f |g| %.3g %.0f tok/s ETA %.0fs\n", who.c_str(),
                   static_cast<long long>(r.step), static_cast<long long>(r.steps), r.loss, r.grad_norm, r.tokens_per_s,
                   r.eta_seconds);
    };
    const auto t0 = std::chrono::steady_clock::now();
    if (m.kind == "s0") train::Trainer(model, std::move(data.examples), tc).train(u.dir.string(), resume, report);
    else if (m.kind == "lora")
      train::train_lora(model, std::move(data.examples), tc, m.lora, u.dir.string(), resume, report,
                        adapters::decoder_prefix(mdir));
    else if (m.kind == "prefix")
      train::train_prefix(model, std::move(data.examples), tc, m.prefix, u.dir.string(), resume, report);
    else train::train_offset(model, std::move(data.examples), tc, u.dir.string(), resume, report);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    io::write_file_atomic(u.done.string(), json({{"train_seconds", secs}}).dump() + "\n");
  }
  if (world) {
    // Every rank evaluates every condition (on its share of the problems), so every rank needs
    // every trained unit: the lowest rank holding one sends its files to the ranks without it.
    trained_by = world->all_gather("experiment trained", trained_here());
    std::vector<std::pair<std::string, std::string>> files;
    std::vector<char> lacking(units.size(), 0);
    for (size_t i = 0; i < units.size(); ++i) {
      int holder = -1;
      bool someone_lacks = false;
      for (int r = 0; r < W; ++r) {
        const bool has = trained_by[static_cast<size_t>(r)][i] == '1';
        if (has && holder < 0) holder = r;
        someone_lacks = someone_lacks || !has;
      }
      if (holder < 0) throw Error("experiment: no rank holds the trained " + units[i].dir.string());
      lacking[i] = trained_by[static_cast<size_t>(R)][i] == '0';
      if (holder == R && someone_lacks) {
        for (auto& f : unit_files(units[i].dir)) files.push_back({fs::relative(f, out).string(), io::read_file(f)});
        files.push_back({fs::relative(units[i].done, out).string(), io::read_file(units[i].done.string())});
      }
    }
    for (const auto& blob : world->all_gather("experiment adapters", pack_files(files)))
      for (auto& [rel, content] : unpack_files(blob)) {
        const fs::path p = out / rel;
        bool wanted = false;
        for (size_t i = 0; i < units.size(); ++i)
          if (lacking[i] && (p == units[i].done || rel_under(p, units[i].dir))) wanted = true;
        if (!wanted) continue;
        fs::create_directories(p.parent_path());
        io::write_file_atomic(p.string(), content);  // the done marker comes after its files
      }
  }

  // Phase 3: evaluate every seed's trained methods (sharded when distributed) and, on rank 0,
  // compare them with base.
  for (const SeedRun& run : seed_runs) {
    const uint64_t seed = run.seed;
    const fs::path& sd = run.sd;
    const CollectSummary& cs = run.cs;
    json seed_rec = {{"seed", seed}, {"collect", cs.to_json()}, {"methods", json::object()}};
    if (cs.kept == 0) {
      if (R == 0)
        std::fprintf(stderr, "experiment: seed %llu: no verified solution was found; nothing to train on\n",
                     static_cast<unsigned long long>(seed));
      seed_rec["error"] = "no verified training solutions";
      seeds_out.push_back(seed_rec);
      continue;
    }
    std::vector<Condition> seed_conds;
    for (const MethodSpec& m : specs) {
      const bool legacy = m.kind == "s0" && m.name == "s0";
      const fs::path dir = sd / (legacy ? std::string("states") : m.name);
      const fs::path done = sd / (legacy ? std::string("train.done") : m.name + ".done");
      Trained t = load_trained(m, dir.string(), model);
      // The done marker holds {"train_seconds"} (empty when written by an older s0).
      const std::string done_text = io::read_file(done.string());
      const json dj = done_text.empty() ? json::object() : json::parse(done_text);
      if (dj.contains("train_seconds")) train_seconds[m.name].push_back(dj["train_seconds"].get<double>());
      sizes[m.name] = {t.params, t.bytes};
      seed_rec["methods"][m.name] = {{"final_loss", t.final_loss}, {"params", t.params}, {"bytes", t.bytes},
                                     {"train_seconds", dj.value("train_seconds", json())}};
      if (legacy) seed_rec["final_loss"] = t.final_loss, seed_rec["state_bytes"] = t.bytes;
      for (size_t k = 0; k < t.conditions.size(); ++k) {
        Condition c{t.conditions[k].first, std::nullopt, std::nullopt, t.conditions[k].second};
        if (m.kind == "s0") c.alpha = t.scales[k];
        if (!first_adapters.count(c.name)) first_adapters[c.name] = c.adapter;
        seed_conds.push_back(std::move(c));
      }
    }
    if (R == 0) std::fprintf(stderr, "experiment: seed %llu: evaluate\n", static_cast<unsigned long long>(seed));
    eo.meta = {{"seed", seed}};
    evaluate(model, tok, style, eval_tasks, seed_conds, sandbox, eo, (sd / "eval").string());
    if (R != 0) continue;  // rank 0 holds the merged results
    // Against base: pass@1, flips and first-character divergence.
    auto res = base_results;
    for (auto& r : read_jsonl((sd / "eval" / "results.jsonl").string())) res.push_back(r);
    std::vector<std::string> order = {"base"};
    for (const auto& c : cond_names) order.push_back(c);
    json s = summarize(res, order, eo.ks);
    seed_rec["conditions"] = s["conditions"];
    for (size_t i = 1; i < order.size(); ++i) {
      const json& c = s["conditions"][i];
      const std::string& a = order[i];
      pass_by[a].push_back(100.0 * c["pass@1"].get<double>());
      flips_up[a] += static_cast<int64_t>(c["fail_to_pass"].size());
      flips_down[a] += static_cast<int64_t>(c["pass_to_fail"].size());
      mcnemar[a].push_back(eval::mcnemar_exact_p(static_cast<int64_t>(c["fail_to_pass"].size()),
                                                 static_cast<int64_t>(c["pass_to_fail"].size())));
      for (auto& p : c["first_char_divergence"]["positions"]) divergence[a].push_back(p.get<int64_t>());
    }
    seeds_out.push_back(seed_rec);
  }
  // The rest is rank 0's (timings, statistics, analyses, report); the others get its summary.
  if (world && R != 0) return json::parse(world->broadcast("experiment summary", std::string()));

  // Decode speed with each condition's adapter attached (the first seed's), single stream,
  // one prompt, fixed length, the conditions interleaved so machine noise hits all alike.
  // Measured once: a resumed run reuses the numbers (decode_speed.json).
  json speed = json::object();
  const int64_t speed_tokens = cfg["decode_speed_tokens"].get<int64_t>();
  const std::string speed_path = (out / "decode_speed.json").string();
  if (fs::exists(speed_path)) speed = json::parse(io::read_file(speed_path));
  bool measured = speed.contains("base");
  for (const auto& c : cond_names) measured = measured && (speed.contains(c) || !first_adapters.count(c));
  if (speed_tokens > 0 && !eval_tasks.empty() && !measured) {
    speed = json::object();
    std::fprintf(stderr, "experiment: decode speed per condition (%lld tokens)\n", static_cast<long long>(speed_tokens));
    auto ids = tok.encode(eval::render_prompt(eval_tasks[0], style), true);
    std::vector<std::pair<std::string, std::shared_ptr<const models::Adapter>>> runs = {{"base", nullptr}};
    for (const auto& c : cond_names)
      if (first_adapters.count(c)) runs.push_back({c, first_adapters[c]});
    std::map<std::string, std::vector<double>> rates;
    for (int rep = 0; rep < 3; ++rep)
      for (const auto& [name, adapter] : runs) {
        generate::GenerateOptions g;
        g.max_new_tokens = speed_tokens;
        g.eos_ids = {-1};
        g.adapter = adapter;
        auto r = generate::generate(model, {ids}, g)[0];
        rates[name].push_back(static_cast<double>(r.tokens.size() - 1) / std::max(r.decode_seconds, 1e-9));
      }
    for (const auto& [name, v] : rates) speed[name] = median_of(v);
    io::write_file_atomic(speed_path, speed.dump(2) + "\n");
  }

  // Statistics over seeds.
  int64_t base_pass = 0;
  for (auto& r : base_results) base_pass += r["passed"].get<bool>();
  const double base_pct = 100.0 * static_cast<double>(base_pass) / static_cast<double>(eval_tasks.size());
  json methods = json::array();
  for (size_t ci = 0; ci < conds.size(); ++ci) {
    const MethodSpec& spec = specs[conds[ci].first];
    const std::string& a = cond_names[ci];
    const auto& v = pass_by[a];
    json m = {{"name", a}, {"method", spec.name}, {"kind", spec.kind}, {"alpha", spec.kind == "s0" ? json(conds[ci].second) : json(nullptr)},
              {"scale", spec.kind == "offset" ? json(conds[ci].second) : json(nullptr)},
              {"seeds", static_cast<int64_t>(v.size())}, {"pass@1_per_seed", v}};
    if (sizes.count(spec.name)) m["params"] = sizes[spec.name].first, m["bytes"] = sizes[spec.name].second;
    if (!train_seconds[spec.name].empty()) m["train_seconds_mean"] = eval::mean(train_seconds[spec.name]);
    if (speed.contains(a)) {
      m["decode_tokens_per_s"] = speed[a];
      if (speed.contains("base")) m["decode_vs_base"] = speed[a].get<double>() / speed["base"].get<double>();
    }
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
  // Paired t-tests between conditions: the same seeds, so the same collected data.
  json paired = json::array();
  for (size_t i = 0; i < cond_names.size(); ++i)
    for (size_t j = i + 1; j < cond_names.size(); ++j) {
      const auto &a = pass_by[cond_names[i]], &b = pass_by[cond_names[j]];
      if (a.size() >= 2 && a.size() == b.size()) {
        auto t = eval::paired_t_test(a, b);
        paired.push_back({{"a", cond_names[i]}, {"b", cond_names[j]}, {"mean_diff_pp", t.mean_diff},
                          {"t", t.t}, {"df", t.df}, {"p", t.p}});
      }
    }
  json summary = {{"base", {{"pass@1", base_pct}, {"passed", base_pass}, {"problems", static_cast<int64_t>(eval_tasks.size())},
                            {"decode_tokens_per_s", speed.value("base", json())}}},
                  {"methods", methods},
                  {"paired_tests", paired},
                  {"seeds", seeds_out},
                  {"train_problems", static_cast<int64_t>(train_tasks.size())},
                  {"config", cfg}};
  if (!cfg["analyses"].is_null())
    summary["analyses"] = experiment_analyses(cfg, model, tok, style, eval_tasks, base_results, specs, out);
  io::write_file_atomic((out / "summary.json").string(), summary.dump(2) + "\n");

  // Charts and report.
  io::write_file_atomic((out / "deltas.svg").string(), experiment_deltas_chart(summary));
  io::write_file_atomic((out / "alpha_sweep.svg").string(), experiment_alpha_chart(summary));
  io::write_file_atomic((out / "methods.svg").string(), experiment_methods_chart(summary));
  io::write_file_atomic((out / "report.md").string(), experiment_report(summary, sandbox.isolated()));
  if (world) world->broadcast("experiment summary", summary.dump());
  return summary;
}

json run_ablation(const json& cfg_in, const std::string& kind, const std::vector<int64_t>& sizes, models::CausalLM* model) {
  json cfg = defaults();
  merge(cfg, cfg_in, "experiment config");
  if (kind != "layers" && kind != "size") throw Error("ablation: kind \"" + kind + "\" (expected layers or size)");
  const json& alphas = cfg["eval"]["alphas"];
  json arm_alphas = alphas.is_array() && !alphas.empty() ? json::array({alphas[0]}) : json(nullptr);
  json methods = json::array();
  if (kind == "layers") {
    for (const char* l : {"early", "middle", "late", "all"}) {
      json m = {{"name", l}, {"kind", "s0"}, {"layers", l}};
      if (!arm_alphas.is_null()) m["alphas"] = arm_alphas;
      methods.push_back(m);
    }
  } else {
    if (sizes.empty()) throw Error("ablation: no training-set sizes given");
    for (int64_t n : sizes) {
      if (n < 1) throw Error("ablation: training-set sizes must be >= 1");
      json m = {{"name", "n" + std::to_string(n)}, {"kind", "s0"}, {"examples", n}};
      if (!arm_alphas.is_null()) m["alphas"] = arm_alphas;
      methods.push_back(m);
    }
  }
  cfg["methods"] = methods;
  cfg["analyses"] = nullptr;
  const std::string name = "ablation_" + kind;
  cfg["out"] = (fs::path(cfg["out"].get<std::string>()) / name).string();
  const json summary = run_experiment(cfg, model);
  json arms = json::array();
  for (const auto& m : summary["methods"]) {
    json a = {{"arm", m["method"]}, {"condition", m["name"]}, {"pass@1_per_seed", m["pass@1_per_seed"]},
              {"fail_to_pass", m["fail_to_pass"]}, {"pass_to_fail", m["pass_to_fail"]}};
    for (const char* k : {"pass@1_mean", "pass@1_std", "delta_pp_mean", "delta_pp_std"}) a[k] = m.value(k, json(nullptr));
    a["welch_p"] = m.contains("welch_vs_base") && !m["welch_vs_base"]["zero_variance"].get<bool>() ? m["welch_vs_base"]["p"] : json(nullptr);
    if (kind == "size") {
      std::vector<int64_t> used;  // per seed: the examples actually trained on (fewer when fewer were collected)
      for (const auto& s : summary["seeds"])
        if (s.contains("collect")) used.push_back(std::min<int64_t>(s["collect"]["kept"].get<int64_t>(), sizes[arms.size()]));
      a["examples"] = sizes[arms.size()], a["examples_used"] = used;
    }
    arms.push_back(a);
  }
  json r = {{"kind", kind}, {"seeds", cfg["seeds"]}, {"problems", summary["base"]["problems"]},
            {"base", summary["base"]["pass@1"]}, {"arms", arms}, {"experiment", cfg["out"]}};
  write_analysis(cfg["out"].get<std::string>(), name, r);
  return r;
}

}  // namespace s0::pipeline
