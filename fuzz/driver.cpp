// Plain main() for the fuzz harnesses, for compilers without libFuzzer (g++) and for CI:
//   fuzz_X FILE|DIR...             runs every file (directories: every file inside, sorted)
//   fuzz_X --mutate N [--seconds T] [--seed S] DIR...
//                                  then N mutations of those inputs (byte flips, inserts,
//                                  deletes, splices; no coverage feedback, so far weaker than
//                                  libFuzzer, but it runs under any sanitizer g++ offers),
//                                  for at most T seconds when given
// Exit status 0 when every input ran; a finding aborts (or the sanitizer reports and exits).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) __attribute__((weak));

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void run(const std::string& s) { LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

std::string mutate(std::string s, const std::vector<std::string>& pool, std::mt19937_64& rng) {
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  static const char* tokens[] = {"{", "}", "[", "]", "\"", ",", ":", "null", "-1", "1e308", "18446744073709551615",
                                 "{{", "}}", "{%", "%}", "\xff", "\xc3", "\\u0000", "\n", "0", "9223372036854775807"};
  const int edits = 1 + static_cast<int>(pick(8));
  for (int e = 0; e < edits; ++e) {
    switch (pick(6)) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << pick(8));
        break;
      case 1:  // random byte
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(rng());
        break;
      case 2: {  // insert a token
        const char* t = tokens[pick(sizeof tokens / sizeof *tokens)];
        s.insert(pick(s.size() + 1), t);
        break;
      }
      case 3:  // delete a range
        if (!s.empty()) {
          size_t a = pick(s.size());
          s.erase(a, 1 + pick(std::min<size_t>(64, s.size() - a)));
        }
        break;
      case 4:  // duplicate a range
        if (!s.empty() && s.size() < (1u << 20)) {
          size_t a = pick(s.size());
          size_t n = 1 + pick(std::min<size_t>(256, s.size() - a));
          s.insert(pick(s.size() + 1), s.substr(a, n));
        }
        break;
      case 5:  // splice with another input
        if (!pool.empty()) {
          const std::string& o = pool[pick(pool.size())];
          size_t a = pick(s.size() + 1), b = pick(o.size() + 1);
          s = s.substr(0, a) + o.substr(b);
        }
        break;
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  long long mutations = 0;
  double seconds = 0;  // > 0: stop mutating after this long (whichever of the two comes first)
  unsigned long long seed = 1;
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--mutate") && i + 1 < argc) {
      mutations = std::atoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (argv[i][0] == '-') {
      std::fprintf(stderr, "usage: %s [--mutate N [--seconds T]] [--seed S] FILE|DIR...\n", argv[0]);
      return 2;
    } else if (std::filesystem::is_directory(argv[i])) {
      std::vector<std::filesystem::path> in;
      for (const auto& e : std::filesystem::directory_iterator(argv[i]))
        if (e.is_regular_file()) in.push_back(e.path());
      std::sort(in.begin(), in.end());
      files.insert(files.end(), in.begin(), in.end());
    } else if (std::filesystem::is_regular_file(argv[i])) {
      files.emplace_back(argv[i]);
    } else {
      std::fprintf(stderr, "%s: no such file or directory: %s\n", argv[0], argv[i]);
      return 2;
    }
  }
  std::vector<std::string> pool;
  for (const auto& f : files) {
    pool.push_back(slurp(f));
    run(pool.back());
  }
  std::fprintf(stderr, "%s: replayed %zu inputs\n", argv[0], files.size());
  if (mutations > 0) {
    if (pool.empty()) pool.emplace_back();
    std::mt19937_64 rng(seed);
    const auto t0 = std::chrono::steady_clock::now();
    long long i = 0;
    for (; i < mutations; ++i) {
      if (seconds > 0 && i % 64 == 0 &&
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >= seconds)
        break;
      const std::string in = mutate(pool[rng() % pool.size()], pool, rng);
      run(in);
      if ((i + 1) % 10000 == 0) std::fprintf(stderr, "%s: %lld mutations\n", argv[0], i + 1);
    }
    std::fprintf(stderr, "%s: ran %lld mutations (seed %llu, %.0f s)\n", argv[0], i, seed,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 0;
}
