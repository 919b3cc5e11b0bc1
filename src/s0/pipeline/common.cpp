#include "s0/pipeline/common.h"

#include <cstdio>
#include <filesystem>

#include "s0/io/atomic_file.h"
#include "s0/util/error.h"

namespace s0::pipeline {

using json = nlohmann::json;
namespace fs = std::filesystem;

generate::GenerateOptions generate_options(const SampleOptions& s, uint64_t seed, bool greedy, int64_t max_new) {
  generate::GenerateOptions g;
  g.max_new_tokens = max_new;
  if (!greedy) g.sampling = {s.temperature, s.top_k, s.top_p, seed};
  return g;
}

uint64_t problem_seed(uint64_t seed, int64_t index) {
  return seed * 1000003ULL + static_cast<uint64_t>(index) * 1009ULL;
}

std::string records_layout(const std::vector<json>& records, const std::string& now, const std::string& what) {
  int64_t other = 0;
  std::string seen;
  for (const json& r : records) {
    auto it = r.find("weight_layout");
    if (it == r.end() || !it->is_string() || *it == now) continue;
    ++other;
    seen = it->get<std::string>();
  }
  if (other == 0) return now;
  std::fprintf(stderr,
               "s0 %s: %lld of %zu records were decoded with the weights in %s, this run in %s (the two round "
               "differently: a resumed run can decode other tokens than an uninterrupted one); weight_layout: mixed\n",
               what.c_str(), static_cast<long long>(other), records.size(), seen.c_str(), now.c_str());
  return "mixed";
}

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

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  size_t a = 0;
  while (a < text.size()) {
    size_t b = text.find('\n', a);
    if (b == std::string::npos) b = text.size();
    if (b > a) out.push_back(text.substr(a, b - a));
    a = b + 1;
  }
  return out;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> out;
  for (auto& l : io::read_complete_lines(path)) out.push_back(json::parse(l));
  return out;
}

}  // namespace s0::pipeline
