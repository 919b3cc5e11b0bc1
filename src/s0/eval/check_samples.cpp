#include "s0/eval/check_samples.h"

#include <algorithm>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "s0/eval/stats.h"
#include "s0/io/atomic_file.h"
#include "s0/util/error.h"

namespace s0::eval {

using nlohmann::ordered_json;

TaskKind detect_task_kind(const std::string& path) {
  std::string text = read_text_file(path);
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) throw Error(path + ": empty task file");
  ordered_json rec;
  try {
    if (text[first] == '[') {
      auto arr = ordered_json::parse(text);
      if (arr.empty()) throw Error(path + ": empty task file");
      rec = arr.at(0);
    } else {
      size_t end = text.find('\n', first);
      rec = ordered_json::parse(text.substr(first, end == std::string::npos ? std::string::npos : end - first));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": cannot tell the task kind, the first record is not valid JSON: " + e.what());
  }
  auto has = [&](const char* k) { return rec.is_object() && rec.contains(k); };
  if (has("task_id") && has("entry_point") && has("test")) return TaskKind::HumanEval;
  if (has("question") && has("query") && has("db_id")) return TaskKind::Spider;
  if (has("problem") && has("answer")) return TaskKind::Math;
  if (has("question") && has("answer")) return TaskKind::GSM8K;
  throw Error(path + ": cannot tell the task kind from the first record's fields (expected HumanEval "
                     "task_id/prompt/test/entry_point, GSM8K question/answer, MATH problem/answer or Spider "
                     "question/query/db_id); pass --task-kind");
}

SampleCheckSummary check_samples(const std::vector<Task>& tasks, const std::string& samples_path,
                                 const std::vector<int64_t>& ks, const Sandbox& sandbox, const CheckOptions& opt) {
  for (int64_t k : ks)
    if (k < 1) throw Error("--k: every k must be >= 1, got " + std::to_string(k));
  std::unordered_map<std::string, const Task*> by_id;
  for (const auto& t : tasks) by_id.emplace(t.id, &t);

  std::istringstream in(read_text_file(samples_path));
  std::vector<ordered_json> lines;
  std::vector<const Task*> which;
  std::vector<std::string> completions;
  std::string line;
  int64_t ln = 0;
  while (std::getline(in, line)) {
    ++ln;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = samples_path + ":" + std::to_string(ln);
    ordered_json j;
    try {
      j = ordered_json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(where + ": invalid JSON: " + e.what());
    }
    if (!j.is_object()) throw Error(where + ": expected a JSON object");
    const Task* t = nullptr;
    if (j.contains("task_id")) {
      const auto& id = j["task_id"];
      std::string key = id.is_string() ? id.get<std::string>() : id.dump();
      auto it = by_id.find(key);
      if (it == by_id.end()) throw Error(where + ": task_id " + id.dump() + " is not in the task file");
      t = it->second;
    } else if (j.contains("index")) {
      if (!j["index"].is_number_integer()) throw Error(where + ": \"index\" must be an integer");
      int64_t i = j["index"].get<int64_t>();
      if (i < 0 || i >= static_cast<int64_t>(tasks.size()))
        throw Error(where + ": index " + std::to_string(i) + " out of range (the task file has " +
                    std::to_string(tasks.size()) + " problems)");
      t = &tasks[i];
    } else {
      throw Error(where + ": needs \"task_id\" (or an integer \"index\")");
    }
    if (!j.contains("completion") || !j["completion"].is_string())
      throw Error(where + ": needs \"completion\" (a string)");
    completions.push_back(j["completion"].get<std::string>());
    which.push_back(t);
    lines.push_back(std::move(j));
  }
  if (lines.empty()) throw Error(samples_path + ": no samples");

  auto verdicts = check_all(which, completions, sandbox, opt);

  SampleCheckSummary s;
  s.samples = static_cast<int64_t>(lines.size());
  s.tasks_total = static_cast<int64_t>(tasks.size());
  std::map<const Task*, std::pair<int64_t, int64_t>> per_task;  // n, c
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const Verdict& v = verdicts[i];
    lines[i]["result"] = v.passed ? "passed" : v.detail == "timeout" ? "timed out" : "failed: " + v.detail;
    lines[i]["passed"] = v.passed;
    out += lines[i].dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    auto& nc = per_task[which[i]];
    nc.first += 1;
    nc.second += v.passed ? 1 : 0;
    s.passed += v.passed ? 1 : 0;
  }
  s.tasks_attempted = static_cast<int64_t>(per_task.size());
  for (int64_t k : ks) {
    bool enough = std::all_of(per_task.begin(), per_task.end(), [&](const auto& e) { return e.second.first >= k; });
    if (!enough) {
      s.skipped_ks.push_back(k);
      continue;
    }
    std::vector<double> v;
    for (const auto& [t, nc] : per_task) v.push_back(pass_at_k(nc.first, nc.second, k));
    s.pass_at_k[k] = mean(v);
  }
  s.results_path = samples_path + "_results.jsonl";
  io::write_file_atomic(s.results_path, out);
  return s;
}

}  // namespace s0::eval
