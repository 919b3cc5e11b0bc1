#include "s0/eval/tasks.h"

#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "s0/io/atomic_file.h"
#include "s0/util/error.h"

namespace s0::eval {

using json = nlohmann::json;
namespace fs = std::filesystem;

TaskKind parse_task_kind(const std::string& s) {
  if (s == "humaneval" || s == "he") return TaskKind::HumanEval;
  if (s == "gsm8k") return TaskKind::GSM8K;
  if (s == "math" || s == "math500" || s == "math-500") return TaskKind::Math;
  if (s == "spider") return TaskKind::Spider;
  throw Error("unknown task kind '" + s + "' (expected humaneval, gsm8k, math or spider)");
}

std::string task_kind_name(TaskKind k) {
  switch (k) {
    case TaskKind::HumanEval: return "humaneval";
    case TaskKind::GSM8K: return "gsm8k";
    case TaskKind::Math: return "math";
    case TaskKind::Spider: return "spider";
  }
  return "?";
}

std::string read_text_file(const std::string& path) {
  if (!fs::exists(path)) throw FileNotFound("task file not found: " + path);
  const size_t limit = kMaxTaskFileBytes;
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (!f) throw Error("cannot open " + path);
    std::string out;
    char buf[1 << 16];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) {
      if (out.size() + static_cast<size_t>(n) > limit) {
        gzclose(f);
        throw Error(io::too_large_message(path, limit, "task files, decompressed"));
      }
      out.append(buf, static_cast<size_t>(n));
    }
    int err = 0;
    const char* msg = gzerror(f, &err);
    std::string emsg = msg ? msg : "";
    gzclose(f);
    if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
      throw Error(path + ": gzip data is corrupt (" + emsg + ")");
    return out;
  }
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (!ec && size > limit) throw Error(io::too_large_message(path, limit, "task files"));
  return io::read_file(path, limit);
}

namespace {

// (line number, object) for every non-blank line, or for every element of a top-level array.
std::vector<std::pair<int64_t, json>> read_records(const std::string& path) {
  std::string text = read_text_file(path);
  std::vector<std::pair<int64_t, json>> out;
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    json arr;
    try {
      arr = json::parse(text);
    } catch (const json::exception& e) {
      throw Error(path + ": invalid JSON: " + e.what());
    }
    int64_t i = 0;
    for (auto& r : arr) out.emplace_back(++i, std::move(r));
    return out;
  }
  std::istringstream in(text);
  std::string line;
  int64_t ln = 0;
  while (std::getline(in, line)) {
    ++ln;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      out.emplace_back(ln, json::parse(line));
    } catch (const json::exception& e) {
      throw Error(path + ":" + std::to_string(ln) + ": invalid JSON: " + e.what());
    }
  }
  return out;
}

std::string field(const json& j, const char* name, const std::string& where, bool required = true) {
  if (!j.is_object()) throw Error(where + ": expected a JSON object");
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) {
    if (required) throw Error(where + ": missing field \"" + name + "\"");
    return "";
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  throw Error(where + ": field \"" + name + "\" must be a string");
}

}  // namespace

std::vector<Task> read_tasks(TaskKind kind, const std::string& path, const std::string& db_dir) {
  if (kind == TaskKind::Spider && db_dir.empty())
    throw Error("Spider tasks need the folder of SQLite databases (--db-dir)");
  auto recs = read_records(path);
  std::vector<Task> tasks;
  tasks.reserve(recs.size());
  for (auto& [ln, j] : recs) {
    std::string where = path + ":" + std::to_string(ln);
    Task t;
    t.kind = kind;
    t.index = static_cast<int64_t>(tasks.size());
    switch (kind) {
      case TaskKind::HumanEval:
        t.id = field(j, "task_id", where);
        t.prompt = field(j, "prompt", where);
        t.reference = field(j, "canonical_solution", where, false);
        t.test = field(j, "test", where);
        t.entry_point = field(j, "entry_point", where);
        break;
      case TaskKind::GSM8K: {
        t.prompt = field(j, "question", where);
        t.reference = field(j, "answer", where);
        size_t p = t.reference.rfind("####");
        if (p == std::string::npos) throw Error(where + ": GSM8K answer does not end in '#### N'");
        t.answer = t.reference.substr(p + 4);
        t.answer.erase(0, t.answer.find_first_not_of(" \t\n"));
        t.answer.erase(t.answer.find_last_not_of(" \t\r\n") + 1);
        break;
      }
      case TaskKind::Math:
        t.prompt = field(j, "problem", where);
        t.reference = field(j, "solution", where, false);
        t.answer = field(j, "answer", where);
        t.id = field(j, "unique_id", where, false);
        break;
      case TaskKind::Spider: {
        t.prompt = field(j, "question", where);
        t.reference = field(j, "query", where);
        std::string db = field(j, "db_id", where);
        if (db.empty() || db.find('/') != std::string::npos || db.find("..") != std::string::npos)
          throw Error(where + ": bad db_id '" + db + "'");
        fs::path a = fs::path(db_dir) / db / (db + ".sqlite"), b = fs::path(db_dir) / (db + ".sqlite");
        if (fs::exists(a)) t.db_path = a.string();
        else if (fs::exists(b)) t.db_path = b.string();
        else throw Error(where + ": database '" + db + "' not found (looked for " + a.string() + " and " + b.string() + ")");
        break;
      }
    }
    if (t.id.empty()) t.id = task_kind_name(kind) + "/" + std::to_string(t.index);
    tasks.push_back(std::move(t));
  }
  if (tasks.empty()) throw Error(path + ": no tasks in the file");
  return tasks;
}

std::vector<int64_t> parse_ranges(const std::string& spec, int64_t n, const std::string& what) {
  std::vector<int64_t> out;
  if (spec == "all") {
    for (int64_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  auto bad = [&](const std::string& why) {
    return Error(what + " '" + spec + "': " + why);
  };
  auto num = [&](const std::string& s) -> int64_t {
    if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) || s.size() > 12)
      throw bad("'" + s + "' is not a non-negative integer");
    return std::stoll(s);
  };
  std::set<int64_t> set;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    size_t dash = item.find('-');
    int64_t a, b;
    if (dash == std::string::npos) a = b = num(item);
    else a = num(item.substr(0, dash)), b = num(item.substr(dash + 1));
    if (a > b) throw bad("range " + item + " is reversed");
    if (b >= n) throw bad("index " + std::to_string(b) + " is out of range (the file has " + std::to_string(n) + " problems)");
    for (int64_t i = a; i <= b; ++i) set.insert(i);
  }
  if (set.empty()) throw bad("selects nothing");
  return {set.begin(), set.end()};
}

std::optional<std::string> standard_split(TaskKind kind, int64_t n, bool train) {
  if (kind == TaskKind::HumanEval && n == 164) return train ? "0-79" : "80-163";
  if (kind == TaskKind::Math && n == 500) return train ? "0-249" : "250-499";
  return std::nullopt;
}

std::vector<Task> select_tasks(const std::vector<Task>& all, const std::vector<int64_t>& indices) {
  std::vector<Task> out;
  for (int64_t i : indices) {
    if (i < 0 || i >= static_cast<int64_t>(all.size())) throw Error("task index " + std::to_string(i) + " out of range");
    out.push_back(all[static_cast<size_t>(i)]);
  }
  return out;
}

}  // namespace s0::eval
