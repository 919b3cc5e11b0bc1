#pragma once
// Verifying model completions, per task kind (METHOD.md section 4). Torch-free.
//
//   HumanEval  program = prompt + completion + "\n" + test + "\n" + "check(<entry_point>)",
//              run by python3 in the sandbox; pass = exit code 0 within the time limit.
//   GSM8K      the number after the last "####" (digits and commas, commas dropped, as
//              lm-evaluation-harness reads it: "2,1251" is 21251), else the last number in the
//              text, compared with the gold number after normalisation (commas, signs, "$",
//              trailing zeros).
//   MATH       the last \boxed{...} (nested braces), normalised (fractions, spaces, \left/\right,
//              units, degrees, percent, trailing ".0", "x=" prefixes) and compared as strings,
//              or as exact rationals when both sides are plain numbers. Model text is never
//              evaluated.
//   Spider     predicted and gold SQL executed read-only on the SQLite database (an authorizer
//              allows only reads; a progress handler enforces the time limit); result
//              multisets compared, order-sensitive only when the gold query has ORDER BY.
#include <optional>
#include <string>
#include <vector>

#include "s0/eval/sandbox.h"
#include "s0/eval/tasks.h"

namespace s0::eval {

// Removes <think>...</think> blocks (and an unterminated trailing <think>...).
std::string strip_think(const std::string& text);

// METHOD.md post-processing for code: think blocks removed, surrounding blank lines and
// trailing whitespace stripped (the first line's indentation is kept: a body-only completion
// needs it), a leading ``` / ```python fence line and a trailing ``` fence removed.
std::string postprocess_code(const std::string& completion);

// The Python program that checks a HumanEval completion (already post-processed).
std::string humaneval_program(const Task& task, const std::string& completion);

// "1,234.50" -> "1234.5", "-0" -> "0", "+7" -> "7", "$12" -> "12", ".5" -> "0.5"; nullopt when
// the text is not a plain decimal number.
std::optional<std::string> normalize_number(const std::string& s);
// The model's final number: after the last "####" when present, else the last number.
std::optional<std::string> extract_gsm8k_answer(const std::string& text);
bool gsm8k_correct(const std::string& completion, const std::string& gold);

// Content of the last \boxed{...} / \fbox{...} (or "\boxed 5"), nested braces handled.
std::optional<std::string> last_boxed(const std::string& text);
std::string normalize_math_answer(const std::string& s);
bool math_equivalent(const std::string& a, const std::string& b);
bool math_correct(const std::string& completion, const std::string& gold);

// SQL from a completion: think blocks removed, a ```sql fence's content when present,
// trimmed, one trailing ';' dropped.
std::string extract_sql(const std::string& completion);

struct SqlResult {
  bool ok = false;
  std::string error;
  std::vector<std::vector<std::string>> rows;  // values canonicalised (1 == 1.0)
};
// Runs one read-only statement. Never writes, never attaches other files.
SqlResult run_sql(const std::string& db_path, const std::string& sql, double seconds = 10,
                  size_t max_rows = 100000);
bool sql_has_order_by(const std::string& sql);
bool sql_results_match(const SqlResult& gold, const SqlResult& pred, bool ordered);
// "CREATE TABLE ..." statements of the database (for prompts).
std::string sqlite_schema(const std::string& db_path);

struct Verdict {
  bool passed = false;
  std::string detail;  // why it failed (exit code, extracted answer, SQL error, ...)
};

struct CheckOptions {
  SandboxLimits limits;  // for code execution
  int workers = 2;       // parallel sandboxed runs
  std::string python = "python3";
};

// Verifies completions[i] (raw model text) against tasks[i]. Code runs in `sandbox`.
std::vector<Verdict> check_all(const std::vector<const Task*>& tasks, const std::vector<std::string>& completions,
                               const Sandbox& sandbox, const CheckOptions& opt);

}  // namespace s0::eval
