#pragma once
// Shared helpers for the fuzz harnesses (fuzz/fuzz_*.cpp). Each harness defines
// LLVMFuzzerTestOneInput; it is linked either with libFuzzer (clang, -fsanitize=fuzzer) or with
// fuzz/driver.cpp (any compiler: replays corpus files, or runs a simple mutation loop).
//
// Contract every harness checks: malformed input ends in s0::Error (what users see, with a
// message) or is accepted; anything else (another exception type, a crash, a sanitizer report,
// a hang) is a finding. Other exceptions abort so that both libFuzzer and the driver stop on them.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>

#include "s0/util/error.h"

namespace s0::fuzz {

// A per-process scratch directory (removed at exit) for harnesses whose parser reads files.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::string tmpl = std::string(t && *t ? t : "/tmp") + "/s0fuzz.XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string keep = tmpl;
    std::atexit([] { std::string cmd = "rm -rf '" + keep + "'"; (void)!std::system(cmd.c_str()); });
    return tmpl;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, std::string_view bytes) {
  const std::string path = scratch_dir() + "/" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
  return path;
}

// Splits the input at the first occurrence of `sep` (e.g. a template and its context);
// without one, everything is the head.
inline std::pair<std::string_view, std::string_view> split(std::string_view in, std::string_view sep) {
  const size_t p = in.find(sep);
  if (p == std::string_view::npos) return {in, {}};
  return {in.substr(0, p), in.substr(p + sep.size())};
}

// Runs `f`; s0::Error is the expected way to refuse input. Any other exception is a finding.
template <typename F>
void expect_clean(const char* harness, F&& f) {
  try {
    f();
  } catch (const s0::Error&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: exception other than s0::Error escaped: %s\n", harness, e.what());
    std::abort();
  }
}

}  // namespace s0::fuzz
