#include "s0/pipeline/collect.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/util/error.h"
#include "s0/util/progress.h"

namespace s0::pipeline {

using json = nlohmann::json;
namespace fs = std::filesystem;

json CollectSummary::to_json() const {
  return {{"problems", problems}, {"solved", solved},         {"kept", kept},
          {"samples", samples},   {"checked", checked}, {"passed_samples", passed_samples}, {"seconds", seconds}};
}

CollectSummary collect(models::CausalLM& model, const text::Tokenizer& tok, const eval::PromptStyle& style,
                       const std::vector<eval::Task>& tasks, const models::StateMap* states, const eval::Sandbox& sandbox,
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
  for (const eval::Task& t : tasks) {
    if (done.count(t.id)) continue;
    const double ts = prog.elapsed();
    const std::string prompt_text = eval::render_prompt(t, style);
    std::vector<int64_t> ids = tok.encode(prompt_text, true);
    const uint64_t seed = problem_seed(opt.sampling.seed, t.index);
    auto gens = generate::sample_n(model, ids, opt.samples,
                                   generate_options(opt.sampling, seed, false, opt.sampling.max_new_tokens), states);
    std::vector<std::string> texts;
    for (auto& g : gens) texts.push_back(tok.decode(g.tokens, /*skip_special_tokens=*/true));
    // Verify in sample order, a pool's worth at a time; unless every sample's verdict is
    // wanted, stop once `keep` usable solutions are found (the kept ones are the first
    // passing samples either way).
    std::string lines;
    int64_t passed = 0, kept = 0, checked = 0;
    const size_t chunk = static_cast<size_t>(std::max(2, opt.check.workers));
    for (size_t a = 0; a < gens.size() && (opt.check_all || kept < opt.keep); a += chunk) {
      const size_t b = std::min(gens.size(), a + chunk);
      std::vector<const eval::Task*> tp(b - a, &t);
      std::vector<std::string> tx(texts.begin() + static_cast<std::ptrdiff_t>(a), texts.begin() + static_cast<std::ptrdiff_t>(b));
      auto vs = eval::check_all(tp, tx, sandbox, opt.check);
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

}  // namespace s0::pipeline
