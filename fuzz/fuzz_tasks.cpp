// Evaluation task files (HumanEval, GSM8K, MATH-500, Spider; JSONL, JSON arrays, .gz) and the
// --train/--eval range syntax. First input byte: bits 0-1 = kind, bit 2 = ".gz" name,
// bit 3 = parse the rest as a range spec instead.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "s0/eval/tasks.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t b = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (b & 8) {
    s0::fuzz::expect_clean("tasks/ranges", [&] {
      const int64_t n = b >> 4;
      for (int64_t i : s0::eval::parse_ranges(std::string(rest), n * 13, "--eval"))
        if (i < 0 || i >= n * 13) std::abort();
    });
    return 0;
  }
  const s0::eval::TaskKind kinds[] = {s0::eval::TaskKind::HumanEval, s0::eval::TaskKind::GSM8K,
                                      s0::eval::TaskKind::Math, s0::eval::TaskKind::Spider};
  const auto kind = kinds[b & 3];
  const std::string path = s0::fuzz::write_file((b & 4) ? "tasks.jsonl.gz" : "tasks.jsonl", rest);
  s0::fuzz::expect_clean("tasks", [&] {
    auto tasks = s0::eval::read_tasks(kind, path, s0::fuzz::scratch_dir());
    auto sel = s0::eval::select_tasks(tasks, s0::eval::parse_ranges("all", static_cast<int64_t>(tasks.size()), "x"));
    (void)s0::eval::standard_split(kind, static_cast<int64_t>(sel.size()), true);
  });
  return 0;
}
