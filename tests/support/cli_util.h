#pragma once
// Running the s0 binary from tests (path from CMake: S0_CLI_PATH).
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "s0/io/atomic_file.h"
#include "test_util.h"

namespace s0::testing {

struct CliResult {
  int exit_code = -1;  // valid when !signaled
  bool signaled = false;
  std::string out, err;
};

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `s0 args...`, capturing stdout and stderr. `exec` makes the shell become s0, so a
// signal shows up as such rather than as a 128+N exit status.
inline CliResult run_cli(const std::vector<std::string>& args) {
  static int n = 0;
  static const std::string dir = s0::testing::temp_dir("cli_io");
  const std::string out = dir + "/out" + std::to_string(n), err = dir + "/err" + std::to_string(n);
  ++n;
  std::string cmd = "exec " + quote(S0_CLI_PATH);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " >" + quote(out) + " 2>" + quote(err) + " </dev/null";
  const int status = std::system(cmd.c_str());
  CliResult r;
  if (status != -1) {
    if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
    r.signaled = WIFSIGNALED(status);
  }
  r.out = std::filesystem::exists(out) ? io::read_file(out) : "";
  r.err = std::filesystem::exists(err) ? io::read_file(err) : "";
  return r;
}

}  // namespace s0::testing
