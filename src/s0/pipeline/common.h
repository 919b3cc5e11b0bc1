#pragma once
// What collect, evaluate and the experiment share: sampling settings, per-problem seeds, the
// settings header a resumed run must match, and result files read back.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/generate/generate.h"

namespace s0::pipeline {

struct SampleOptions {
  int64_t max_new_tokens = 512;
  double temperature = 0.7, top_p = 0.95;
  int64_t top_k = 0;
  uint64_t seed = 0;
};

// Decode settings: greedy, or sampled with `s`'s temperature/top-k/top-p from `seed`.
generate::GenerateOptions generate_options(const SampleOptions& s, uint64_t seed, bool greedy, int64_t max_new);

// Seed of a problem's first sample: distinct per (run seed, problem index).
uint64_t problem_seed(uint64_t seed, int64_t index);

// Settings a resumed run must share with the run that wrote the files: writes `header` to
// `path` when absent, else refuses (naming the file) a header that differs.
void check_or_write_header(const std::string& path, const nlohmann::json& header);

// The weights' layout ("pairs" or "rows", models::use_generation_layout) over a run's records,
// each of which names the layout it was decoded in ("weight_layout"; records written before
// the field existed name none and are not counted): `now` when they all agree with it, else
// "mixed", with a warning on stderr (once per call) that `what`'s resumed records were decoded
// in another layout. The two layouts round differently, so a run resumed in the other one
// (another CPU, or S0_DECODE_KERNEL changed) can decode other tokens than an uninterrupted one;
// it is not refused (its settings did not change), only recorded.
std::string records_layout(const std::vector<nlohmann::json>& records, const std::string& now, const std::string& what);

// The first position at which two sequences (texts, token ids) differ: the length of their
// common prefix (equal sequences: their length).
template <class Seq>
int64_t first_difference(const Seq& a, const Seq& b) {
  size_t p = 0;
  while (p < a.size() && p < b.size() && a[p] == b[p]) ++p;
  return static_cast<int64_t>(p);
}

// The non-empty lines of `text`.
std::vector<std::string> split_lines(const std::string& text);

// Every complete line of a JSONL file, parsed (a torn last line is ignored).
std::vector<nlohmann::json> read_jsonl(const std::string& path);

}  // namespace s0::pipeline
