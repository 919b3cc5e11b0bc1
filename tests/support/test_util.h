#pragma once
// Helpers shared by the tests: temp dirs, tiny models written by the tests themselves.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "s0/models/init_model.h"

namespace s0::testing {

// The directories temp_dir made, removed when the test process exits (S0_KEEP_TEST_DIRS=1
// keeps them for a look after a failure). Only by the process that made them: a forked
// child that exits through the destructors must not take its parent's files.
class TempDirs {
 public:
  static TempDirs& get() {
    static TempDirs dirs;
    return dirs;
  }
  void add(const std::string& d) { dirs_.push_back(d); }
  ~TempDirs() {
    if (::getpid() != owner_ || std::getenv("S0_KEEP_TEST_DIRS")) return;
    std::error_code ec;
    for (const auto& d : dirs_) std::filesystem::remove_all(d, ec);
  }

 private:
  TempDirs() : owner_(::getpid()) {}
  pid_t owner_;
  std::vector<std::string> dirs_;
};

// A fresh empty directory under the test temp dir, removed at exit (TempDirs).
inline std::string temp_dir(const std::string& name) {
  namespace fs = std::filesystem;
  std::string base = ::testing::TempDir();
  fs::path p = fs::path(base) / ("s0_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  TempDirs::get().add(p.string());
  return p.string();
}

// Where the parity fixtures are: $S0_FIXTURES_DIR, else the copy in tests/fixtures.
inline std::string fixtures_dir() {
  if (const char* e = std::getenv("S0_FIXTURES_DIR")) return e;
  return S0_FIXTURES_DIR;
}

// The repository's root (tools/ holds the Python reference scripts the tests run).
inline std::string repo_root() {
  return (std::filesystem::path(S0_FIXTURES_DIR) / ".." / "..").lexically_normal().string();
}

// Whether python3 with the standard modules the reference scripts use is available.
inline bool have_python3() {
  return std::system("python3 -c 'import json, struct, zipfile, pickle' >/dev/null 2>&1") == 0;
}

// Runs a shell command; returns its exit status and its stdout and stderr together.
inline std::pair<int, std::string> run_cmd(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return {-1, ""};
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// Writes the "tiny" Qwen3.5 preset (random weights) once per process and returns its path.
inline std::string tiny_qwen35(const std::string& dtype = "f32", uint64_t seed = 1) {
  std::string dir = temp_dir("tiny_qwen35_" + dtype + "_" + std::to_string(seed));
  s0::models::InitOptions opt;
  opt.seed = seed;
  opt.dtype = dtype;
  s0::models::write_random_qwen35(dir, s0::models::Qwen35Config::preset("tiny"), opt);
  return dir;
}

// Writes the "tiny" preset of a family (random weights), optionally changed by `edit`:
// Config::preset("tiny"), edited, then written by `write` (write_random_falcon_h1, ...).
template <typename Config, typename Edit, typename Write>
inline std::string tiny_model_with(const std::string& family, const std::string& name, Edit&& edit,
                                   Write&& write, const std::string& dtype, uint64_t seed,
                                   uint64_t shard_bytes) {
  std::string dir =
      temp_dir("tiny_" + family + "_" + name + "_" + dtype + "_" + std::to_string(seed));
  s0::models::InitOptions opt;
  opt.seed = seed;
  opt.dtype = dtype;
  opt.shard_bytes = shard_bytes;
  auto cfg = Config::preset("tiny");
  edit(cfg);
  write(dir, cfg, opt);
  return dir;
}

template <typename Edit>
inline std::string tiny_falcon_h1_with(const std::string& name, Edit&& edit,
                                       const std::string& dtype = "f32", uint64_t seed = 1,
                                       uint64_t shard_bytes = 0) {
  return tiny_model_with<s0::models::FalconH1Config>(
      "falcon", name, edit, s0::models::write_random_falcon_h1, dtype, seed, shard_bytes);
}
inline std::string tiny_falcon_h1(const std::string& dtype = "f32", uint64_t seed = 1) {
  return tiny_falcon_h1_with(
      "plain", [](s0::models::FalconH1Config&) {}, dtype, seed);
}

template <typename Edit>
inline std::string tiny_qwen2_with(const std::string& name, Edit&& edit,
                                   const std::string& dtype = "f32", uint64_t seed = 1,
                                   uint64_t shard_bytes = 0) {
  return tiny_model_with<s0::models::Qwen2Config>(
      "qwen2", name, edit, s0::models::write_random_qwen2, dtype, seed, shard_bytes);
}
inline std::string tiny_qwen2(const std::string& dtype = "f32", uint64_t seed = 1) {
  return tiny_qwen2_with(
      "plain", [](s0::models::Qwen2Config&) {}, dtype, seed);
}

}  // namespace s0::testing
