#pragma once
// Benchmark problems, read from the files users supply (nothing is downloaded):
//   HumanEval   JSONL or JSONL.GZ  {task_id, prompt, canonical_solution, test, entry_point}
//   GSM8K       JSONL              {question, answer}          answer ends in "#### N"
//   MATH-500    JSONL              {problem, solution, answer, level, subject}
//   Spider      JSON array or JSONL {question, query, db_id}   + a folder of SQLite databases
//               (DB_DIR/<db_id>/<db_id>.sqlite or DB_DIR/<db_id>.sqlite)
// Torch-free. Errors name the file, line and field.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace s0::eval {

enum class TaskKind { HumanEval, GSM8K, Math, Spider };

// "humaneval" | "gsm8k" | "math" | "spider" (also "math500", "he").
TaskKind parse_task_kind(const std::string& s);
std::string task_kind_name(TaskKind k);

struct Task {
  TaskKind kind = TaskKind::HumanEval;
  int64_t index = 0;         // position in the file (what --train/--eval ranges select)
  std::string id;            // task_id, or "<kind>/<index>" when the file has none
  std::string prompt;        // HumanEval: the function prompt; others: the question/problem
  std::string reference;     // canonical solution / worked answer / gold SQL query
  std::string answer;        // GSM8K: the number after ####; MATH: the answer; Spider: unused
  std::string test;          // HumanEval test code
  std::string entry_point;   // HumanEval function name
  std::string db_path;       // Spider: the SQLite file
};

// Reads any of the formats above (`db_dir` only for Spider). `.gz` files are decompressed.
std::vector<Task> read_tasks(TaskKind kind, const std::string& path, const std::string& db_dir = "");

// "0-79", "80-163", "0-9,20,30-39", "all" -> sorted unique indices < n; an index out of range
// or malformed text is an error naming `what`.
std::vector<int64_t> parse_ranges(const std::string& spec, int64_t n, const std::string& what);

// The paper's train/held-out split of a standard file (METHOD.md section 4): HumanEval's 164
// problems 0-79 / 80-163, MATH-500's 0-249 / 250-499; nullopt for any other file.
std::optional<std::string> standard_split(TaskKind kind, int64_t n, bool train);

// Keeps the tasks whose index is listed.
std::vector<Task> select_tasks(const std::vector<Task>& all, const std::vector<int64_t>& indices);

// Whole file as text; transparently gunzips files whose name ends in ".gz". Files larger than
// kMaxTaskFileBytes (after decompression) are refused: the real benchmarks are a few MB.
constexpr size_t kMaxTaskFileBytes = size_t{256} << 20;
std::string read_text_file(const std::string& path);

}  // namespace s0::eval
