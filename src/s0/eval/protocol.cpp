#include "s0/eval/protocol.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "s0/eval/stats.h"
#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/util/error.h"
#include "s0/util/progress.h"

namespace s0::eval {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::string instruction(const Task& t) {
  switch (t.kind) {
    case TaskKind::HumanEval:
      return "Complete the following Python function. Only output the function body, no explanation. No markdown.\n\n" +
             t.prompt;
    case TaskKind::GSM8K:
      return "Solve the following problem. Reason step by step, then write the final answer as a number after "
             "\"####\" on the last line.\n\n" +
             t.prompt;
    case TaskKind::Math:
      return "Solve the following problem. Reason step by step and put the final answer in \\boxed{}.\n\n" + t.prompt;
    case TaskKind::Spider:
      return "Write one SQLite query that answers the question. Only output the SQL query, no explanation. No "
             "markdown.\n\nDatabase schema:\n" +
             sqlite_schema(t.db_path) + "\nQuestion: " + t.prompt;
  }
  return t.prompt;
}

std::string render_prompt(const Task& t, const PromptStyle& style) {
  if (style.chat) {
    text::ChatOptions co;
    co.add_generation_prompt = true;
    co.enable_thinking = style.enable_thinking;
    return style.chat->render({{"user", instruction(t)}}, co);
  }
  if (t.kind == TaskKind::HumanEval) return t.prompt;
  return instruction(t) + "\n";
}

json CollectSummary::to_json() const {
  return {{"problems", problems}, {"solved", solved},         {"kept", kept},
          {"samples", samples},   {"checked", checked}, {"passed_samples", passed_samples}, {"seconds", seconds}};
}

namespace {

generate::GenerateOptions gen_options(const SampleOptions& s, uint64_t seed, bool greedy, int64_t max_new) {
  generate::GenerateOptions g;
  g.max_new_tokens = max_new;
  if (!greedy) g.sampling = {s.temperature, s.top_k, s.top_p, seed};
  return g;
}

// Seed of a problem's first sample: distinct per (run seed, problem index).
uint64_t problem_seed(uint64_t seed, int64_t index) {
  return seed * 1000003ULL + static_cast<uint64_t>(index) * 1009ULL;
}

// Settings a resumed run must share with the run that wrote the files.
void check_or_write_header(const std::string& path, const json& header) {
  if (fs::exists(path)) {
    json old;
    try {
      old = json::parse(io::read_file(path));
    } catch (const json::exception& e) {
      throw Error(path + ": unreadable (" + std::string(e.what()) + "); delete it to start over");
    }
    if (old != header)
      throw Error(path + " was written with other settings (" + old.dump() + " vs now " + header.dump() +
                  "); use a new output path or delete the old files");
    return;
  }
  io::write_file_atomic(path, header.dump(2) + "\n");
}

}  // namespace

CollectSummary collect(models::CausalLM& model, const text::Tokenizer& tok, const PromptStyle& style,
                       const std::vector<Task>& tasks, const models::StateMap* states, const Sandbox& sandbox,
                       const CollectOptions& opt, const std::string& out_path) {
  if (opt.samples < 1) throw Error("--samples must be >= 1");
  if (opt.keep < 1) throw Error("--keep must be >= 1");
  if (opt.sampling.max_new_tokens < 1) throw Error("--max-new-tokens must be >= 1");
  fs::path out(out_path);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  const std::string progress_path = out_path + ".progress.jsonl";
  check_or_write_header(out_path + ".config.json",
                        {{"samples", opt.samples},
                         {"keep", opt.keep},
                         {"temperature", opt.sampling.temperature},
                         {"top_p", opt.sampling.top_p},
                         {"top_k", opt.sampling.top_k},
                         {"max_new_tokens", opt.sampling.max_new_tokens},
                         {"seed", opt.sampling.seed},
                         {"with_states", states != nullptr},
                         {"check_all", opt.check_all},
                         {"tasks", static_cast<int64_t>(tasks.size())}});
  // Resume: problems with a progress line are done; kept lines of any other problem (a crash
  // between the two appends) are dropped so the problem is redone cleanly.
  CollectSummary sum;
  std::set<std::string> done;
  for (const auto& line : io::read_complete_lines(progress_path)) {
    json j = json::parse(line);
    done.insert(j.at("task_id").get<std::string>());
    sum.problems++;
    sum.samples += j.at("samples").get<int64_t>();
    sum.checked += j.value("checked", j.at("samples").get<int64_t>());
    sum.passed_samples += j.at("passed").get<int64_t>();
    sum.kept += j.at("kept").get<int64_t>();
    sum.solved += j.at("passed").get<int64_t>() > 0;
  }
  {
    auto lines = io::read_complete_lines(out_path);
    std::string keep_text;
    size_t kept_lines = 0;
    for (const auto& l : lines)
      if (done.count(json::parse(l).at("task_id").get<std::string>())) keep_text += l + "\n", ++kept_lines;
    if (kept_lines != lines.size()) io::write_file_atomic(out_path, keep_text);
    else if (!fs::exists(out_path)) io::write_file_atomic(out_path, "");
  }
  Progress prog("collect", static_cast<int64_t>(tasks.size()), "problems");
  prog.set_start(static_cast<int64_t>(done.size()));
  const double t0 = prog.elapsed();
  int64_t finished = static_cast<int64_t>(done.size());
  for (const Task& t : tasks) {
    if (done.count(t.id)) continue;
    const double ts = prog.elapsed();
    const std::string prompt_text = render_prompt(t, style);
    std::vector<int64_t> ids = tok.encode(prompt_text, true);
    const uint64_t seed = problem_seed(opt.sampling.seed, t.index);
    auto gens = generate::sample_n(model, ids, opt.samples,
                                   gen_options(opt.sampling, seed, false, opt.sampling.max_new_tokens), states);
    std::vector<std::string> texts;
    for (auto& g : gens) texts.push_back(tok.decode(g.tokens, /*skip_special_tokens=*/true));
    // Verify in sample order, a pool's worth at a time; unless every sample's verdict is
    // wanted, stop once `keep` usable solutions are found (the kept ones are the first
    // passing samples either way).
    std::vector<Verdict> verdicts(gens.size());
    std::string lines;
    int64_t passed = 0, kept = 0, checked = 0;
    const size_t chunk = static_cast<size_t>(std::max(2, opt.check.workers));
    for (size_t a = 0; a < gens.size() && (opt.check_all || kept < opt.keep); a += chunk) {
      const size_t b = std::min(gens.size(), a + chunk);
      std::vector<const Task*> tp(b - a, &t);
      std::vector<std::string> tx(texts.begin() + static_cast<std::ptrdiff_t>(a), texts.begin() + static_cast<std::ptrdiff_t>(b));
      auto vs = check_all(tp, tx, sandbox, opt.check);
      checked += static_cast<int64_t>(b - a);
      for (size_t i = a; i < b; ++i) {
        if (!vs[i - a].passed) continue;
        ++passed;
        const std::string completion = tok.decode(gens[i].tokens, false);  // keeps the end-of-turn token
        // Nothing to learn from an empty completion (the prompt alone passed).
        if (kept >= opt.keep || completion.empty()) continue;
        ++kept;
        json rec = {{"prompt", prompt_text},
                    {"completion", completion},
                    {"task_id", t.id},
                    {"index", t.index},
                    {"sample", static_cast<int64_t>(i)},
                    {"seed", seed + i},
                    {"finish_reason", gens[i].finish_reason}};
        lines += rec.dump() + "\n";
      }
    }
    if (!lines.empty()) io::append_durable(out_path, lines);
    io::append_durable(progress_path, json{{"task_id", t.id},
                                           {"index", t.index},
                                           {"samples", static_cast<int64_t>(gens.size())},
                                           {"checked", checked},
                                           {"passed", passed},
                                           {"kept", kept},
                                           {"seconds", prog.elapsed() - ts}}
                                              .dump() +
                                          "\n");
    sum.problems++;
    sum.samples += static_cast<int64_t>(gens.size());
    sum.checked += checked;
    sum.passed_samples += passed;
    sum.kept += kept;
    sum.solved += passed > 0;
    ++finished;
    if (opt.progress)
      prog.update(finished, std::to_string(sum.solved) + " solved, " + std::to_string(sum.kept) + " kept");
  }
  prog.finish();
  sum.seconds = prog.elapsed() - t0;
  return sum;
}

// ------------------------------------------------------------------ evaluation

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
          if (k <= sn) pk[k] += pass_at_k(sn, sc, k);
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
          const std::string x = it->second->value("completion", ""), y = r->value("completion", "");
          size_t p = 0;
          while (p < x.size() && p < y.size() && x[p] == y[p]) ++p;
          div.push_back(static_cast<int64_t>(p));
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

namespace {

std::string pct(double x) {
  char b[32];
  snprintf(b, sizeof b, "%.1f%%", 100 * x);
  return b;
}

}  // namespace

std::string markdown_report(const json& summary) {
  std::ostringstream o;
  o << "# s0 evaluation report\n\n";
  if (summary.contains("meta")) {
    for (auto& [k, v] : summary["meta"].items()) o << "- **" << k << "**: " << (v.is_string() ? v.get<std::string>() : v.dump()) << "\n";
    o << "\n";
  }
  std::vector<std::string> kcols;
  for (const auto& c : summary["conditions"])
    if (c.contains("sampled"))
      for (auto& [k, v] : c["sampled"].items())
        if (std::find(kcols.begin(), kcols.end(), k) == kcols.end()) kcols.push_back(k);
  o << "| condition | alpha | greedy pass@1 | delta vs base | FAIL->PASS | PASS->FAIL |";
  for (auto& k : kcols) o << " sampled " << k << " |";
  o << " decode tok/s |\n|---|---|---|---|---|---|";
  for (size_t i = 0; i < kcols.size(); ++i) o << "---|";
  o << "---|\n";
  for (const auto& c : summary["conditions"]) {
    char delta[32] = "";
    if (c.contains("delta_pp")) snprintf(delta, sizeof delta, "%+.1f pp", c["delta_pp"].get<double>());
    o << "| " << c["name"].get<std::string>() << " | " << (c["alpha"].is_null() ? "" : c["alpha"].dump()) << " | "
      << pct(c["pass@1"].get<double>()) << " (" << c["greedy_passed"].get<int64_t>() << "/" << c["problems"].get<int64_t>()
      << ") | " << delta << " | " << (c.contains("fail_to_pass") ? std::to_string(c["fail_to_pass"].size()) : "")
      << " | " << (c.contains("pass_to_fail") ? std::to_string(c["pass_to_fail"].size()) : "") << " |";
    for (auto& k : kcols) o << " " << (c.contains("sampled") && c["sampled"].contains(k) ? pct(c["sampled"][k].get<double>()) : "") << " |";
    char tps[32];
    snprintf(tps, sizeof tps, "%.1f", c["decode_tokens_per_s"].get<double>());
    o << " " << tps << " |\n";
  }
  for (const auto& c : summary["conditions"]) {
    if (!c.contains("first_char_divergence") || !c["first_char_divergence"].contains("median")) continue;
    const auto& d = c["first_char_divergence"];
    o << "\n**" << c["name"].get<std::string>() << "**: FAIL->PASS flips first differ from the base output at character "
      << d["median"].get<int64_t>() << " (median); " << pct(d["at_position_0"].get<double>()) << " at position 0.\n";
  }
  return o.str();
}

json evaluate(models::CausalLM& model, const text::Tokenizer& tok, const PromptStyle& style, const std::vector<Task>& tasks,
              const std::vector<Condition>& conditions, const Sandbox& sandbox, const EvalOptions& opt,
              const std::string& out_dir) {
  if (conditions.empty()) throw Error("nothing to evaluate: no conditions");
  if (opt.max_new_tokens < 1) throw Error("--max-new-tokens must be >= 1");
  std::set<std::string> names;
  for (const auto& c : conditions)
    if (!names.insert(c.name).second) throw Error("condition '" + c.name + "' given twice");
  fs::create_directories(out_dir);
  const std::string results_path = (fs::path(out_dir) / "results.jsonl").string();
  check_or_write_header((fs::path(out_dir) / "eval_config.json").string(),
                        {{"max_new_tokens", opt.max_new_tokens},
                         {"samples", opt.samples},
                         {"temperature", opt.sampling.temperature},
                         {"top_p", opt.sampling.top_p},
                         {"top_k", opt.sampling.top_k},
                         {"seed", opt.sampling.seed},
                         {"meta", opt.meta}});
  std::vector<json> results;
  std::set<std::pair<std::string, std::string>> done;
  for (const auto& line : io::read_complete_lines(results_path)) {
    json j = json::parse(line);
    done.insert({j.at("condition").get<std::string>(), j.at("task_id").get<std::string>()});
    results.push_back(std::move(j));
  }
  const int64_t total = static_cast<int64_t>(conditions.size() * tasks.size());
  Progress prog("eval", total, "problems");
  int64_t finished = 0;
  for (const auto& c : conditions)
    for (const auto& t : tasks) finished += done.count({c.name, t.id});
  prog.set_start(finished);
  std::map<std::string, int64_t> passes;
  for (const auto& r : results) passes[r["condition"].get<std::string>()] += r["passed"].get<bool>();
  for (const auto& c : conditions) {
    const models::StateMap* states = c.states ? &*c.states : nullptr;
    std::vector<const Task*> todo;
    for (const auto& t : tasks)
      if (!done.count({c.name, t.id})) todo.push_back(&t);
    // Greedy completions of up to `batch` problems decoded together (decode_step: the same
    // tokens as one at a time), verified together, then appended one line per problem: a
    // crash loses at most the group in flight.
    const size_t group = static_cast<size_t>(std::max<int64_t>(1, opt.batch));
    for (size_t a = 0; a < todo.size(); a += group) {
      const size_t b = std::min(todo.size(), a + group);
      std::vector<const Task*> ts(todo.begin() + static_cast<std::ptrdiff_t>(a), todo.begin() + static_cast<std::ptrdiff_t>(b));
      std::vector<std::vector<int64_t>> prompts;
      for (const Task* t : ts) prompts.push_back(tok.encode(render_prompt(*t, style), true));
      const double t0 = prog.elapsed();
      auto gens = generate::generate_batched(model, prompts, gen_options(opt.sampling, 0, true, opt.max_new_tokens), states,
                                             static_cast<int64_t>(group));
      const double wall = prog.elapsed() - t0;
      int64_t group_tokens = 0;
      std::vector<std::string> texts;
      for (auto& g : gens) texts.push_back(tok.decode(g.tokens, true)), group_tokens += static_cast<int64_t>(g.tokens.size());
      auto verdicts = check_all(ts, texts, sandbox, opt.check);
      for (size_t k = 0; k < ts.size(); ++k) {
        const Task& t = *ts[k];
        const auto& g = gens[k];
        const Verdict& v = verdicts[k];
        json rec = {{"condition", c.name},
                    {"alpha", c.alpha ? json(*c.alpha) : json(nullptr)},
                    {"task_id", t.id},
                    {"index", t.index},
                    {"passed", v.passed},
                    {"detail", v.detail},
                    {"completion", texts[k]},
                    {"tokens", static_cast<int64_t>(g.tokens.size())},
                    {"finish_reason", g.finish_reason},
                    // this problem's share of the group's wall time (sums give aggregate tokens/s)
                    {"decode_seconds", group_tokens ? wall * static_cast<double>(g.tokens.size()) / group_tokens : 0.0}};
        if (opt.samples > 0) {
          auto sg = generate::sample_n(model, prompts[k], opt.samples,
                                       gen_options(opt.sampling, problem_seed(opt.sampling.seed, t.index), false,
                                                   opt.max_new_tokens),
                                       states);
          std::vector<std::string> st;
          for (auto& x : sg) st.push_back(tok.decode(x.tokens, true));
          auto vs = check_all(std::vector<const Task*>(sg.size(), &t), st, sandbox, opt.check);
          rec["samples"] = opt.samples;
          rec["sample_passes"] = std::count_if(vs.begin(), vs.end(), [](const Verdict& x) { return x.passed; });
        }
        io::append_durable(results_path, rec.dump() + "\n");
        passes[c.name] += v.passed;
        results.push_back(std::move(rec));
        ++finished;
      }
      if (opt.progress) prog.update(finished, c.name + ": " + std::to_string(passes[c.name]) + " passed");
    }
  }
  prog.finish();
  // Only the requested conditions and tasks count (results.jsonl may hold more).
  std::set<std::string> ids;
  for (const auto& t : tasks) ids.insert(t.id);
  std::vector<json> sel;
  for (auto& r : results)
    if (names.count(r["condition"].get<std::string>()) && ids.count(r["task_id"].get<std::string>())) sel.push_back(r);
  std::vector<std::string> order;
  for (const auto& c : conditions) order.push_back(c.name);
  json summary = summarize(sel, order, opt.ks);
  summary["meta"] = opt.meta;
  summary["files"] = {{"results", results_path}, {"report", (fs::path(out_dir) / "report.md").string()}};
  io::write_file_atomic((fs::path(out_dir) / "summary.json").string(), summary.dump(2) + "\n");
  io::write_file_atomic((fs::path(out_dir) / "report.md").string(), markdown_report(summary));
  return summary;
}

}  // namespace s0::eval
