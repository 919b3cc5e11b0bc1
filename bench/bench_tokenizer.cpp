// Tokenizer throughput: encode MB/s (one thread) on a mixed corpus, plus load time. Prints JSON.
//   build/bench_tokenizer [--tokenizer tests/data/tokenizer/qwen3/tokenizer.json.gz]
//                         [--corpus FILE | --root .] [--dump-corpus FILE] [--reps 3]
// Default corpus: code (the repo's .cpp/.h sources), prose (its .md files) and the strings of
// tests/data/tokenizer/qwen3_cases.jsonl.gz (CJK, Thai, emoji, whitespace runs, ...), encoded
// as one call per file / per line of the JSONL.
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "s0/text/tokenizer.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

static std::string read_all(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

static std::string read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) return {};
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, n);
  gzclose(f);
  return out;
}

int main(int argc, char** argv) {
  std::string tok_path = "tests/data/tokenizer/qwen3/tokenizer.json.gz", corpus_file, root = ".", dump;
  int reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--tokenizer") tok_path = argv[i + 1];
    else if (a == "--corpus") corpus_file = argv[i + 1];
    else if (a == "--root") root = argv[i + 1];
    else if (a == "--dump-corpus") dump = argv[i + 1];
    else if (a == "--reps") reps = std::stoi(argv[i + 1]);
  }
  // docs: (category, text)
  std::vector<std::pair<std::string, std::string>> docs;
  if (!corpus_file.empty()) {
    docs.push_back({"file", read_all(corpus_file)});
  } else {
    std::vector<fs::path> files;
    for (const char* sub : {"src", "tests", "bench", "tools", "scripts"})
      if (fs::exists(fs::path(root) / sub))
        for (auto& e : fs::recursive_directory_iterator(fs::path(root) / sub))
          if (e.is_regular_file()) files.push_back(e.path());
    for (auto& e : fs::directory_iterator(root))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (auto& p : files) {
      auto ext = p.extension().string();
      if (ext == ".cpp" || ext == ".h" || ext == ".js" || ext == ".sh") docs.push_back({"code", read_all(p.string())});
      else if (ext == ".md") docs.push_back({"prose", read_all(p.string())});
    }
    std::istringstream in(read_gz((fs::path(root) / "tests/data/tokenizer/qwen3_cases.jsonl.gz").string()));
    std::string line;
    while (std::getline(in, line))
      if (!line.empty()) docs.push_back({"multilingual", nlohmann::json::parse(line)["text"].get<std::string>()});
  }
  if (!dump.empty()) {  // one JSON string per line (for the oracle: node oracle.js batch --in FILE)
    std::ofstream o(dump);
    for (auto& d : docs) o << nlohmann::json(d.second).dump() << "\n";
  }
  auto t0 = Clock::now();
  auto tok = s0::text::Tokenizer::from_file(tok_path);
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();

  nlohmann::json res = {{"tokenizer", tok_path}, {"load_seconds", load_s}, {"threads", 1}};
  std::map<std::string, std::pair<size_t, double>> by_cat;  // bytes, best seconds
  size_t total_bytes = 0, total_tokens = 0;
  for (auto& d : docs) total_bytes += d.second.size();
  double cold = 0, best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {
    std::map<std::string, double> secs;
    size_t ntok = 0;
    auto a = Clock::now();
    for (auto& d : docs) {
      auto s = Clock::now();
      ntok += tok.encode(d.second, false).size();
      secs[d.first] += std::chrono::duration<double>(Clock::now() - s).count();
    }
    double el = std::chrono::duration<double>(Clock::now() - a).count();
    total_tokens = ntok;
    if (r == 0) {
      cold = el;  // first pass fills the BPE cache
      continue;
    }
    best = std::min(best, el);
    for (auto& [c, s] : secs) {
      auto& e = by_cat[c];
      if (e.second == 0 || s < e.second) e.second = s;
    }
  }
  for (auto& d : docs) by_cat[d.first].first += d.second.size();
  res["corpus_bytes"] = total_bytes;
  res["corpus_docs"] = docs.size();
  res["tokens"] = total_tokens;
  res["cold_MBps"] = total_bytes / 1e6 / cold;
  res["warm_MBps"] = total_bytes / 1e6 / best;
  for (auto& [c, e] : by_cat) res["warm_MBps_" + c] = e.first / 1e6 / e.second;
  std::printf("%s\n", res.dump().c_str());
  return 0;
}
