#include "s0/pipeline/collect.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "s0/dist/dist.h"
#include "s0/generate/generate.h"
#include "s0/io/atomic_file.h"
#include "s0/util/error.h"
#include "s0/util/progress.h"

namespace s0::pipeline {

using json = nlohmann::json;
namespace fs = std::filesystem;

json CollectSummary::to_json() const {
  return {{"problems", problems}, {"solved", solved},         {"kept", kept},
          {"samples", samples},   {"checked", checked}, {"passed_samples", passed_samples}, {"seconds", seconds},
          {"weight_layout", weight_layout}};
}

CollectSummary collect(models::CausalLM& model, const text::Tokenizer& tok, const eval::PromptStyle& style,
                       const std::vector<eval::Task>& tasks, const models::StateMap* states, const eval::Sandbox& sandbox,
                       const CollectOptions& opt, const std::string& out_path) {
  if (opt.samples < 1) throw Error("--samples must be >= 1");
  if (opt.keep < 1) throw Error("--keep must be >= 1");
  if (opt.sampling.max_new_tokens < 1) throw Error("--max-new-tokens must be >= 1");
  models::use_generation_layout(model);
  // Distributed (dist::current()): rank r collects every W-th unfinished problem, appending
  // one line per problem ({"progress": line, "kept": [lines]}) to OUT.rank<r>.jsonl; rank 0
  // merges them into OUT and OUT.progress.jsonl in the order a single process writes them.
  dist::World* world = dist::current();
  const int W = world ? world->size() : 1, R = world ? world->rank() : 0;
  fs::path out(out_path);
  if (out.has_parent_path()) fs::create_directories(out.parent_path());
  const std::string progress_path = out_path + ".progress.jsonl";
  auto header = [&] {
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
  };
  if (world) world->agree("collect settings", header);
  else header();
  std::map<std::string, size_t> task_pos;
  for (size_t i = 0; i < tasks.size(); ++i) task_pos[tasks[i].id] = i;
  // Problems finished in rank files, not yet in OUT: {task_id -> (progress line, kept lines)}.
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> extra;
  std::set<std::string> base_done;
  for (const auto& line : io::read_complete_lines(progress_path))
    base_done.insert(json::parse(line).at("task_id").get<std::string>());
  auto take_extra = [&](const std::vector<std::string>& lines) {
    for (const auto& l : lines) {
      json j = json::parse(l);
      const std::string prog_line = j.at("progress").get<std::string>();
      const std::string id = json::parse(prog_line).at("task_id").get<std::string>();
      if (base_done.count(id) || extra.count(id)) continue;
      extra[id] = {prog_line, j.at("kept").get<std::vector<std::string>>()};
    }
  };
  // OUT and OUT.progress.jsonl with `extra` appended in task order (OUT first: a crash in
  // between leaves kept lines without a progress line, which the resume below drops).
  auto merge_extra = [&]() {
    std::vector<std::string> ids;
    for (const auto& [id, v] : extra) ids.push_back(id);
    std::stable_sort(ids.begin(), ids.end(), [&](const std::string& a, const std::string& b) {
      const size_t pa = task_pos.count(a) ? task_pos[a] : tasks.size(), pb = task_pos.count(b) ? task_pos[b] : tasks.size();
      return pa != pb ? pa < pb : a < b;
    });
    std::string out_text, prog_text;
    for (const auto& l : io::read_complete_lines(out_path))
      if (base_done.count(json::parse(l).at("task_id").get<std::string>())) out_text += l + "\n";
    for (const auto& l : io::read_complete_lines(progress_path)) prog_text += l + "\n";
    for (const auto& id : ids) {
      for (const auto& k : extra[id].second) out_text += k + "\n";
      prog_text += extra[id].first + "\n";
    }
    io::write_file_atomic(out_path, out_text);
    io::write_file_atomic(progress_path, prog_text);
  };
  const std::vector<std::string> seen_shards = dist::rank_files(out_path, ".jsonl");
  std::vector<std::string> shard_lines;
  for (const auto& f : seen_shards)
    for (auto& l : io::read_complete_lines(f)) shard_lines.push_back(std::move(l));
  std::set<std::string> dist_done;
  if (W == 1) {
    if (!seen_shards.empty()) {
      // A distributed run stopped before merging: fold its rank files in, then go on alone.
      take_extra(shard_lines);
      merge_extra();
      for (const auto& f : seen_shards) fs::remove(f);
      extra.clear();
    }
  } else {
    json mine = {{"shards", shard_lines}};
    if (R != 0) {
      // Another machine's OUT counts as finished work too.
      std::vector<std::string> as_shard;
      auto kept_lines = io::read_complete_lines(out_path);
      for (const auto& pl : io::read_complete_lines(progress_path)) {
        const std::string id = json::parse(pl).at("task_id").get<std::string>();
        std::vector<std::string> k;
        for (const auto& l : kept_lines)
          if (json::parse(l).at("task_id").get<std::string>() == id) k.push_back(l);
        as_shard.push_back(json{{"progress", pl}, {"kept", k}}.dump());
      }
      mine["base"] = as_shard;
    } else {
      mine["base"] = json::array();
    }
    auto all = world->gather("collect resume", mine.dump());
    json done_ids = json::array();
    if (R == 0) {
      for (const auto& a : all) {
        json j = json::parse(a);
        take_extra(j.at("base").get<std::vector<std::string>>());
        take_extra(j.at("shards").get<std::vector<std::string>>());
      }
      for (const auto& id : base_done) done_ids.push_back(id);
      for (const auto& [id, v] : extra) done_ids.push_back(id);
    }
    for (const auto& id : json::parse(world->broadcast("collect done", done_ids.dump())))
      dist_done.insert(id.get<std::string>());
  }
  // Resume: problems with a progress line are done; kept lines of any other problem (a crash
  // between the two appends) are dropped so the problem is redone cleanly.
  CollectSummary sum;
  const std::string layout_now = model.pair_layout() ? "pairs" : "rows";
  sum.weight_layout = layout_now;
  std::set<std::string> done;
  auto count = [&sum](const json& j) {
    sum.problems++;
    sum.samples += j.at("samples").get<int64_t>();
    sum.checked += j.value("checked", j.at("samples").get<int64_t>());
    sum.passed_samples += j.at("passed").get<int64_t>();
    sum.kept += j.at("kept").get<int64_t>();
    sum.solved += j.at("passed").get<int64_t>() > 0;
  };
  if (W == 1) {
    std::vector<json> recs;
    for (const auto& line : io::read_complete_lines(progress_path)) {
      json j = json::parse(line);
      done.insert(j.at("task_id").get<std::string>());
      count(j);
      recs.push_back(std::move(j));
    }
    sum.weight_layout = records_layout(recs, layout_now, "collect");
    auto lines = io::read_complete_lines(out_path);
    std::string keep_text;
    size_t kept_lines = 0;
    for (const auto& l : lines)
      if (done.count(json::parse(l).at("task_id").get<std::string>())) keep_text += l + "\n", ++kept_lines;
    if (kept_lines != lines.size()) io::write_file_atomic(out_path, keep_text);
    else if (!fs::exists(out_path)) io::write_file_atomic(out_path, "");
  } else {
    done = dist_done;
  }
  const std::string shard_path = dist::rank_file(out_path, R, ".jsonl");
  const std::string uid = world ? world->unique("collect") : std::string();
  std::vector<const eval::Task*> todo;
  size_t k_todo = 0;
  for (const eval::Task& t : tasks)
    if (!done.count(t.id) && k_todo++ % static_cast<size_t>(W) == static_cast<size_t>(R)) todo.push_back(&t);
  std::string new_lines;  // distributed: this rank's shard lines, sent to rank 0 at the end
  Progress prog("collect", static_cast<int64_t>(tasks.size()), "problems");
  prog.set_start(static_cast<int64_t>(done.size()));
  const double t0 = prog.elapsed();
  int64_t finished = static_cast<int64_t>(done.size());
  const int64_t finished_before = finished;
  // Problems are sampled `group` at a time (their samples decoded as one batch, each
  // problem prefilled once; every sample's tokens are those of the problem alone), then
  // verified and written one by one in task order, as before.
  // By default as many problems as fit in kCollectBatchRows sequences whose recurrent states
  // (f32, one matrix per recurrent layer per sequence) stay under kCollectStateBytes.
  if (opt.batch < 0) throw Error("collect: batch must be >= 0 (0: as memory allows)");
  double state_bytes = 4.0 * static_cast<double>(model.recurrent_layers().size());
  for (int64_t d : model.state_shape()) state_bytes *= static_cast<double>(d);
  const int64_t rows = std::min<int64_t>(
      kCollectBatchRows, state_bytes > 0 ? static_cast<int64_t>(kCollectStateBytes / state_bytes) : kCollectBatchRows);
  const size_t group = static_cast<size_t>(
      opt.batch > 0 ? opt.batch : std::max<int64_t>(1, rows / std::max<int64_t>(opt.samples, 1)));
  std::vector<std::vector<generate::Generation>> group_gens;
  std::vector<std::string> group_prompts;
  double group_share = 0;  // the group's sampling seconds per problem
  for (size_t q = 0; q < todo.size(); ++q) {
    const eval::Task& t = *todo[q];
    if (q % group == 0) {
      const double tg = prog.elapsed();
      const size_t end = std::min(todo.size(), q + group);
      std::vector<std::vector<int64_t>> ids;
      std::vector<uint64_t> seeds;
      group_prompts.clear();
      for (size_t u = q; u < end; ++u) {
        group_prompts.push_back(eval::render_prompt(*todo[u], style));
        ids.push_back(tok.encode(group_prompts.back(), true));
        seeds.push_back(problem_seed(opt.sampling.seed, todo[u]->index));
      }
      group_gens = generate::sample_n_many(model, ids, opt.samples,
                                           seeds, generate_options(opt.sampling, 0, false, opt.sampling.max_new_tokens),
                                           states, static_cast<int64_t>(end - q) * opt.samples);
      group_share = (prog.elapsed() - tg) / static_cast<double>(end - q);
    }
    const double ts = prog.elapsed() - group_share;
    const std::string& prompt_text = group_prompts[q % group];
    const uint64_t seed = problem_seed(opt.sampling.seed, t.index);
    std::vector<generate::Generation>& gens = group_gens[q % group];
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
    const json prog_rec = {{"task_id", t.id},
                           {"index", t.index},
                           {"samples", static_cast<int64_t>(gens.size())},
                           {"checked", checked},
                           {"passed", passed},
                           {"kept", kept},
                           {"weight_layout", layout_now},
                           {"seconds", prog.elapsed() - ts}};
    if (W == 1) {
      if (!lines.empty()) io::append_durable(out_path, lines);
      io::append_durable(progress_path, prog_rec.dump() + "\n");
    } else {
      // One line per problem: the problem and its kept solutions land together or not at all.
      const std::string line = json{{"progress", prog_rec.dump()}, {"kept", split_lines(lines)}}.dump() + "\n";
      io::append_durable(shard_path, line);
      new_lines += line;
    }
    count(prog_rec);
    ++finished;
    int64_t shown = finished, solved = sum.solved, kept_all = sum.kept;
    if (world) {  // the whole job's counts
      shown = finished_before + world->add(uid + "/done", 1);
      solved = world->add(uid + "/solved", passed > 0);
      kept_all = world->add(uid + "/kept", kept);
      if (R != 0) continue;
    }
    if (opt.progress)
      prog.update(shown, std::to_string(solved) + " solved, " + std::to_string(kept_all) + " kept");
  }
  prog.finish();
  if (W > 1) {
    // Rank 0 writes OUT and OUT.progress.jsonl as a single process would have.
    auto all = world->gather("collect results", new_lines);
    std::string summary;
    if (R == 0) {
      for (const auto& a : all) take_extra(split_lines(a));
      merge_extra();
      sum = CollectSummary{};
      std::vector<json> recs;
      for (const auto& line : io::read_complete_lines(progress_path)) recs.push_back(json::parse(line)), count(recs.back());
      sum.weight_layout = records_layout(recs, layout_now, "collect");
      sum.seconds = prog.elapsed() - t0;
      summary = sum.to_json().dump();
    }
    json j = json::parse(world->broadcast("collect summary", summary));
    std::error_code ec;
    fs::remove(shard_path, ec);
    for (const auto& f : seen_shards) fs::remove(f, ec);
    CollectSummary s;
    s.problems = j["problems"], s.solved = j["solved"], s.kept = j["kept"], s.samples = j["samples"];
    s.checked = j["checked"], s.passed_samples = j["passed_samples"], s.seconds = j["seconds"];
    s.weight_layout = j["weight_layout"];
    return s;
  }
  sum.seconds = prog.elapsed() - t0;
  return sum;
}

}  // namespace s0::pipeline
