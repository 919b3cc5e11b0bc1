#include "s0/pipeline/evaluate.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "s0/dist/dist.h"
#include "s0/eval/stats.h"
#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/pipeline/report.h"
#include "s0/util/error.h"
#include "s0/util/progress.h"

namespace s0::pipeline {

using json = nlohmann::json;
namespace fs = std::filesystem;

json summarize(const std::vector<json>& results, const std::vector<std::string>& order, const std::vector<int64_t>& ks) {
  // condition -> task_id -> record
  std::map<std::string, std::map<std::string, const json*>> by;
  for (const auto& r : results) by[r.at("condition").get<std::string>()][r.at("task_id").get<std::string>()] = &r;
  json conds = json::array();
  const auto* base = order.empty() || !by.count(order[0]) ? nullptr : &by[order[0]];
  for (const auto& name : order) {
    auto& m = by[name];
    json c = {{"name", name}};
    int64_t n = 0, pass = 0, toks = 0;
    double dsec = 0;
    std::map<int64_t, double> pk;
    int64_t sampled = 0;
    std::optional<double> alpha;
    for (auto& [id, r] : m) {
      ++n;
      pass += r->at("passed").get<bool>();
      toks += r->value("tokens", 0);
      dsec += r->value("decode_seconds", 0.0);
      if (r->contains("alpha") && !r->at("alpha").is_null()) alpha = r->at("alpha").get<double>();
      if (r->contains("samples")) {
        int64_t sn = r->at("samples").get<int64_t>(), sc = r->at("sample_passes").get<int64_t>();
        ++sampled;
        for (int64_t k : ks)
          if (k <= sn) pk[k] += eval::pass_at_k(sn, sc, k);
      }
    }
    c["problems"] = n;
    c["greedy_passed"] = pass;
    c["pass@1"] = n ? static_cast<double>(pass) / static_cast<double>(n) : 0.0;
    c["alpha"] = alpha ? json(*alpha) : json(nullptr);
    c["decode_tokens_per_s"] = dsec > 0 ? static_cast<double>(toks) / dsec : 0.0;
    if (sampled) {
      json s = json::object();
      for (auto& [k, v] : pk) s["pass@" + std::to_string(k)] = v / static_cast<double>(sampled);
      c["sampled"] = s;
    }
    if (base && name != order[0]) {
      json up = json::array(), down = json::array();
      std::vector<int64_t> div;
      for (auto& [id, r] : m) {
        auto it = base->find(id);
        if (it == base->end()) continue;
        bool b = it->second->at("passed").get<bool>(), t = r->at("passed").get<bool>();
        if (!b && t) {
          up.push_back(id);
          div.push_back(first_difference(it->second->value("completion", ""), r->value("completion", "")));
        } else if (b && !t) {
          down.push_back(id);
        }
      }
      c["delta_pp"] = 100.0 * (c["pass@1"].get<double>() - conds[0]["pass@1"].get<double>());
      c["fail_to_pass"] = up;
      c["pass_to_fail"] = down;
      json d = {{"positions", div}};
      if (!div.empty()) {
        auto s = div;
        std::sort(s.begin(), s.end());
        d["median"] = s[s.size() / 2];
        d["at_position_0"] = static_cast<double>(std::count(s.begin(), s.end(), 0)) / static_cast<double>(s.size());
      }
      c["first_char_divergence"] = d;
    }
    conds.push_back(c);
  }
  return {{"conditions", conds}};
}

json evaluate(models::CausalLM& model, const text::Tokenizer& tok, const eval::PromptStyle& style, const std::vector<eval::Task>& tasks,
              const std::vector<Condition>& conditions, const eval::Sandbox& sandbox, const EvalOptions& opt,
              const std::string& out_dir) {
  if (conditions.empty()) throw Error("nothing to evaluate: no conditions");
  if (opt.max_new_tokens < 1) throw Error("--max-new-tokens must be >= 1");
  std::set<std::string> names;
  for (const auto& c : conditions)
    if (!names.insert(c.name).second) throw Error("condition '" + c.name + "' given twice");
  const std::string weight_layout = models::use_generation_layout(model) ? "pairs" : "rows";
  // Distributed (dist::current()): rank r evaluates every W-th unfinished problem of each
  // condition, appending to its own results.rank<r>.jsonl; rank 0 gathers everything into
  // results.jsonl in the order a single process writes it (below).
  dist::World* world = dist::current();
  const int W = world ? world->size() : 1, R = world ? world->rank() : 0;
  fs::create_directories(out_dir);
  const std::string results_path = (fs::path(out_dir) / "results.jsonl").string();
  const std::string shard_prefix = (fs::path(out_dir) / "results").string();
  auto header = [&] {
    check_or_write_header((fs::path(out_dir) / "eval_config.json").string(),
                          {{"max_new_tokens", opt.max_new_tokens},
                           {"samples", opt.samples},
                           {"temperature", opt.sampling.temperature},
                           {"top_p", opt.sampling.top_p},
                           {"top_k", opt.sampling.top_k},
                           {"seed", opt.sampling.seed},
                           {"meta", opt.meta}});
  };
  // summary.json and report.md from every record (rank 0 only when distributed).
  auto finish_summary = [&](const std::vector<json>& all) {
    // Only the requested conditions and tasks count (results.jsonl may hold more).
    std::set<std::string> ids;
    for (const auto& t : tasks) ids.insert(t.id);
    std::vector<json> sel;
    for (const auto& r : all)
      if (names.count(r["condition"].get<std::string>()) && ids.count(r["task_id"].get<std::string>())) sel.push_back(r);
    std::vector<std::string> order;
    for (const auto& c : conditions) order.push_back(c.name);
    json summary = summarize(sel, order, opt.ks);
    summary["meta"] = opt.meta;
    summary["weight_layout"] = records_layout(sel, weight_layout, "eval");  // the decode kernel's rounding depends on it
    summary["files"] = {{"results", results_path}, {"report", (fs::path(out_dir) / "report.md").string()}};
    io::write_file_atomic((fs::path(out_dir) / "summary.json").string(), summary.dump(2) + "\n");
    io::write_file_atomic((fs::path(out_dir) / "report.md").string(), evaluation_report(summary));
    return summary;
  };
  if (world) world->agree("eval settings", header);
  else header();
  using Key = std::pair<std::string, std::string>;
  auto key_of = [](const json& j) -> Key {
    return {j.at("condition").get<std::string>(), j.at("task_id").get<std::string>()};
  };
  // The order a single process appends in: conditions in order, tasks in order; records of
  // other conditions or tasks (an earlier run) after them, by name.
  std::map<std::string, size_t> cond_pos, task_pos;
  for (size_t i = 0; i < conditions.size(); ++i) cond_pos[conditions[i].name] = i;
  for (size_t i = 0; i < tasks.size(); ++i) task_pos[tasks[i].id] = i;
  auto canonical = [&](std::vector<std::pair<json, std::string>>& recs) {
    auto rank_of = [&](const json& j) {
      auto [c, t] = key_of(j);
      auto ci = cond_pos.count(c) ? cond_pos[c] : conditions.size();
      auto ti = task_pos.count(t) ? task_pos[t] : tasks.size();
      return std::make_tuple(ci, ci == conditions.size() ? c : std::string(), ti, ti == tasks.size() ? t : std::string());
    };
    std::stable_sort(recs.begin(), recs.end(), [&](const auto& a, const auto& b) { return rank_of(a.first) < rank_of(b.first); });
  };
  std::vector<json> results;
  std::vector<std::string> base_lines;  // results.jsonl as found (rank 0's)
  std::set<Key> done;
  for (const auto& line : io::read_complete_lines(results_path)) {
    json j = json::parse(line);
    done.insert(key_of(j));
    results.push_back(std::move(j));
    base_lines.push_back(line);
  }
  // Records a distributed run left in rank files (merged into results.jsonl at its end).
  const std::vector<std::string> seen_shards = dist::rank_files(shard_prefix, ".jsonl");
  std::vector<std::string> shard_lines;
  for (const auto& f : seen_shards)
    for (auto& l : io::read_complete_lines(f)) shard_lines.push_back(std::move(l));
  std::vector<std::pair<json, std::string>> extra;  // records not in results.jsonl
  auto take_extra = [&](const std::vector<std::string>& lines) {
    for (const auto& l : lines) {
      json j = json::parse(l);
      if (done.insert(key_of(j)).second) extra.push_back({std::move(j), l});
    }
  };
  if (W == 1) {
    if (!seen_shards.empty()) {
      // A distributed run stopped before merging: fold its rank files in, then go on alone.
      take_extra(shard_lines);
      canonical(extra);
      std::string text;
      for (const auto& l : base_lines) text += l + "\n";
      for (auto& [j, l] : extra) text += l + "\n", results.push_back(std::move(j));
      io::write_file_atomic(results_path, text);
      extra.clear();
      for (const auto& f : seen_shards) fs::remove(f);
    }
  } else {
    // Rank 0 learns what every rank has on disk, and tells everybody what is done.
    json mine = {{"base", R == 0 ? json::array() : json(base_lines)}, {"shards", shard_lines}};
    auto all = world->gather("eval resume", mine.dump());
    json done_keys = json::array();
    if (R == 0) {
      for (const auto& a : all) {
        json j = json::parse(a);
        take_extra(j.at("base").get<std::vector<std::string>>());
        take_extra(j.at("shards").get<std::vector<std::string>>());
      }
      for (const auto& k : done) done_keys.push_back({k.first, k.second});
    }
    done.clear();
    for (const auto& k : json::parse(world->broadcast("eval done", done_keys.dump())))
      done.insert({k[0].get<std::string>(), k[1].get<std::string>()});
  }
  const std::string append_path = W == 1 ? results_path : dist::rank_file(shard_prefix, R, ".jsonl");
  const std::string uid = world ? world->unique("eval") : std::string();
  const int64_t total = static_cast<int64_t>(conditions.size() * tasks.size());
  Progress prog("eval", total, "problems");
  int64_t finished = 0;
  for (const auto& c : conditions)
    for (const auto& t : tasks) finished += done.count({c.name, t.id});
  prog.set_start(finished);
  const int64_t finished_before = finished;
  std::map<std::string, int64_t> passes;
  for (const auto& r : results) passes[r["condition"].get<std::string>()] += r["passed"].get<bool>();
  for (const auto& [j, l] : extra) passes[j["condition"].get<std::string>()] += j["passed"].get<bool>();
  std::map<std::string, int64_t> passes_before = passes;
  std::string new_lines;  // this rank's records (distributed: sent to rank 0 at the end)
  for (const auto& c : conditions) {
    const models::StateMap* states = c.states ? &*c.states : nullptr;
    auto options = [&](uint64_t seed, bool greedy) {
      auto g = generate_options(opt.sampling, seed, greedy, opt.max_new_tokens);
      g.adapter = c.adapter;
      return g;
    };
    std::vector<const eval::Task*> todo;
    size_t k_todo = 0;
    for (const auto& t : tasks)
      if (!done.count({c.name, t.id}) && k_todo++ % static_cast<size_t>(W) == static_cast<size_t>(R)) todo.push_back(&t);
    // Greedy completions of up to `batch` problems decoded together (decode_step: the same
    // tokens as one at a time), verified together, then appended one line per problem: a
    // crash loses at most the group in flight.
    const size_t group = static_cast<size_t>(std::max<int64_t>(1, opt.batch));
    for (size_t a = 0; a < todo.size(); a += group) {
      const size_t b = std::min(todo.size(), a + group);
      std::vector<const eval::Task*> ts(todo.begin() + static_cast<std::ptrdiff_t>(a), todo.begin() + static_cast<std::ptrdiff_t>(b));
      std::vector<std::vector<int64_t>> prompts;
      for (const eval::Task* t : ts) prompts.push_back(tok.encode(eval::render_prompt(*t, style), true));
      const double t0 = prog.elapsed();
      auto gens = generate::generate_batched(model, prompts, options(0, true), states,
                                             static_cast<int64_t>(group));
      const double wall = prog.elapsed() - t0;
      int64_t group_tokens = 0;
      std::vector<std::string> texts;
      for (auto& g : gens) texts.push_back(tok.decode(g.tokens, true)), group_tokens += static_cast<int64_t>(g.tokens.size());
      auto verdicts = eval::check_all(ts, texts, sandbox, opt.check);
      for (size_t k = 0; k < ts.size(); ++k) {
        const eval::Task& t = *ts[k];
        const auto& g = gens[k];
        const eval::Verdict& v = verdicts[k];
        json rec = {{"condition", c.name},
                    {"alpha", c.alpha ? json(*c.alpha) : json(nullptr)},
                    {"task_id", t.id},
                    {"index", t.index},
                    {"passed", v.passed},
                    {"detail", v.detail},
                    {"completion", texts[k]},
                    {"tokens", static_cast<int64_t>(g.tokens.size())},
                    {"token_ids", g.tokens},
                    {"finish_reason", g.finish_reason},
                    {"weight_layout", weight_layout},
                    // this problem's share of the group's wall time (sums give aggregate tokens/s)
                    {"decode_seconds", group_tokens ? wall * static_cast<double>(g.tokens.size()) / group_tokens : 0.0}};
        if (opt.samples > 0) {
          auto sg = generate::sample_n(model, prompts[k], opt.samples,
                                       options(problem_seed(opt.sampling.seed, t.index), false), states);
          std::vector<std::string> st;
          for (auto& x : sg) st.push_back(tok.decode(x.tokens, true));
          auto vs = eval::check_all(std::vector<const eval::Task*>(sg.size(), &t), st, sandbox, opt.check);
          rec["samples"] = opt.samples;
          rec["sample_passes"] = std::count_if(vs.begin(), vs.end(), [](const eval::Verdict& x) { return x.passed; });
        }
        const std::string line = rec.dump() + "\n";
        io::append_durable(append_path, line);
        if (W > 1) new_lines += line;
        passes[c.name] += v.passed;
        results.push_back(std::move(rec));
        ++finished;
      }
      int64_t shown = finished, shown_passes = passes[c.name];
      if (world) {  // the whole job's counts
        int64_t group_passes = 0;
        for (size_t k = 0; k < ts.size(); ++k) group_passes += verdicts[k].passed;
        shown = finished_before + world->add(uid + "/done", static_cast<int64_t>(ts.size()));
        shown_passes = passes_before[c.name] + world->add(uid + "/passed/" + c.name, group_passes);
        if (R != 0) continue;
      }
      if (opt.progress) prog.update(shown, c.name + ": " + std::to_string(shown_passes) + " passed");
    }
  }
  prog.finish();
  if (W > 1) {
    // Rank 0 writes results.jsonl as a single process would have: what it held, then every
    // rank's records (and those of earlier rank files) in condition and task order.
    auto all = world->gather("eval results", new_lines);
    json summary;
    if (R == 0) {
      results.clear();
      for (const auto& l : base_lines) results.push_back(json::parse(l));
      for (size_t r = 1; r < all.size(); ++r) all[0] += all[r];
      take_extra(split_lines(all[0]));
      canonical(extra);
      std::string text;
      for (const auto& l : base_lines) text += l + "\n";
      for (auto& [j, l] : extra) text += l + "\n", results.push_back(j);
      io::write_file_atomic(results_path, text);
      summary = finish_summary(results);
    }
    summary = json::parse(world->broadcast("eval summary", R == 0 ? summary.dump() : std::string()));
    // results.jsonl holds everything now: the rank files go.
    std::error_code ec;
    fs::remove(append_path, ec);
    for (const auto& f : seen_shards) fs::remove(f, ec);
    return summary;
  }
  return finish_summary(results);
}

}  // namespace s0::pipeline
