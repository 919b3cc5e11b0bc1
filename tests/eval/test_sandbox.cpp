// Sandbox for untrusted code: verdicts, containment of hostile programs, limits, pool order.
// Isolation tests skip when bubblewrap is missing or cannot create namespaces here (detected
// by a trial run in Sandbox::detect_bwrap).
#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <signal.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "s0/eval/sandbox.h"
#include "s0/util/error.h"
#include "test_util.h"

namespace {

using s0::eval::RunResult;
using s0::eval::Sandbox;
using s0::eval::SandboxLimits;

const std::vector<std::string> kPy = {"python3", "-"};

bool have_python() { return access("/usr/bin/python3", X_OK) == 0; }

#define REQUIRE_BWRAP()                                                                   \
  do {                                                                                    \
    if (Sandbox::detect_bwrap().empty()) GTEST_SKIP() << "bubblewrap unavailable here"; \
    if (!have_python()) GTEST_SKIP() << "/usr/bin/python3 missing";                      \
  } while (0)

Sandbox iso() { return Sandbox::create(false); }

RunResult py(const Sandbox& sb, const std::string& code, SandboxLimits lim = {}) {
  return sb.run(kPy, code, lim);
}

// Repository root (tests/fixtures/../..).
std::string repo_dir() {
  return std::filesystem::weakly_canonical(std::filesystem::path(S0_FIXTURES_DIR) / ".." / "..").string();
}

// Pids of processes whose command line is exactly argv.
std::vector<int> find_procs(const std::vector<std::string>& argv) {
  std::string want;
  for (const auto& a : argv) want += a + std::string(1, '\0');
  std::vector<int> pids;
  DIR* d = opendir("/proc");
  if (!d) return pids;
  while (dirent* e = readdir(d)) {
    int pid = atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/cmdline", std::ios::binary);
    std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (s == want) pids.push_back(pid);
  }
  closedir(d);
  return pids;
}

// True once no process with this command line is left (killed processes can take a moment
// to be reaped by the system's init, longer on a loaded machine).
bool gone(const std::vector<std::string>& argv) {
  for (int i = 0; i < 100; ++i) {
    if (find_procs(argv).empty()) return true;
    usleep(100 * 1000);
  }
  return false;
}

TEST(Sandbox, PassAndFail) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  EXPECT_TRUE(sb.isolated());
  RunResult ok = py(sb, "print('hello')\n");
  EXPECT_TRUE(ok.passed()) << ok.err;
  EXPECT_EQ(ok.exit_code, 0);
  EXPECT_EQ(ok.out, "hello\n");
  RunResult bad = py(sb, "assert False, 'nope'\n");
  EXPECT_FALSE(bad.passed());
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("AssertionError"), std::string::npos) << bad.err;
  RunResult code = py(sb, "import sys; sys.exit(3)\n");
  EXPECT_EQ(code.exit_code, 3);
  RunResult sig = py(sb, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)\n");
  EXPECT_FALSE(sig.passed());
  EXPECT_EQ(sig.term_signal, 15);
}

TEST(Sandbox, NonPositiveLimitsAreNotSet) {
  if (!have_python()) GTEST_SKIP() << "/usr/bin/python3 missing";
  SandboxLimits lim;
  lim.cpu_seconds = 0;
  lim.memory_bytes = 0;
  lim.max_processes = 0;
  lim.max_open_files = 0;
  lim.max_file_bytes = -1;
  std::vector<Sandbox> boxes = {Sandbox()};
  if (!Sandbox::detect_bwrap().empty()) boxes.push_back(iso());
  for (const Sandbox& sb : boxes) {
    RunResult r = py(sb, "print(1)\n", lim);
    EXPECT_TRUE(r.passed()) << sb.isolated() << " " << r.err;
  }
}

TEST(Sandbox, StdinDeliveredAndCwdIsPrivateTmp) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  RunResult r = sb.run({"python3", "-c",
                        "import sys, os; d = sys.stdin.read(); print(len(d), d[:5], os.getcwd());"
                        "open('x.txt', 'w').write('ok'); print(open('x.txt').read())"},
                       "abcde" + std::string(300000, 'z'));
  ASSERT_TRUE(r.passed()) << r.err;
  EXPECT_EQ(r.out, "300005 abcde /tmp\nok\n");
  // A fresh /tmp each run: the file of the previous run is gone.
  // Only stdin/stdout/stderr are open in the sandboxed program (no fd of the harness leaks in).
  RunResult fds = py(sb, "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))\n");
  EXPECT_EQ(fds.out, "[0, 1, 2, 3]\n") << fds.err;  // 3: the listdir handle itself
  RunResult again = py(sb, "import os; print(os.listdir('.'))\n");
  ASSERT_TRUE(again.passed()) << again.err;
  EXPECT_EQ(again.out, "[]\n");
}

TEST(Sandbox, InfiniteLoopTimesOut) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  SandboxLimits lim;
  lim.wall_seconds = 1;
  RunResult r = py(sb, "while True: pass\n", lim);
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.passed());
  EXPECT_LT(r.seconds, lim.wall_seconds + 10.0);  // killed, not left running
  // CPU limit alone (wall generous): killed by RLIMIT_CPU.
  lim.wall_seconds = 30;
  lim.cpu_seconds = 1;
  RunResult c = py(sb, "while True: pass\n", lim);
  EXPECT_FALSE(c.passed());
  EXPECT_FALSE(c.timed_out);  // ended by the CPU limit's signal, not the wall clock
  EXPECT_NE(c.term_signal, 0);
}

TEST(Sandbox, TimeoutKillsWholeProcessTree) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  SandboxLimits lim;
  lim.wall_seconds = 1;
  RunResult r = py(sb,
                   "import subprocess\n"
                   "subprocess.Popen(['sleep', '987'])\n"
                   "subprocess.Popen(['sh', '-c', 'sleep 986 & sleep 985'], start_new_session=True)\n"
                   "while True: pass\n",
                   lim);
  EXPECT_TRUE(r.timed_out);
  usleep(200 * 1000);
  EXPECT_TRUE(gone({"sleep", "987"}));
  EXPECT_TRUE(gone({"sleep", "986"}));
  EXPECT_TRUE(gone({"sleep", "985"}));
  // The main program exiting also ends its leftover descendants.
  RunResult d = py(sb, "import subprocess, sys\nsubprocess.Popen(['sleep', '984'])\nprint('bye')\n");
  EXPECT_TRUE(d.passed()) << d.err;
  EXPECT_LT(d.seconds, 9.0);  // did not wait for the leftover sleep (wall 10)
  usleep(200 * 1000);
  EXPECT_TRUE(gone({"sleep", "984"}));
}

TEST(Sandbox, ForkBombContained) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  SandboxLimits lim;
  lim.wall_seconds = 2;
  RunResult r = py(sb,
                   "import os\n"
                   "n = 0\n"
                   "while True:\n"
                   "    try:\n"
                   "        os.fork(); n += 1\n"
                   "    except OSError:\n"
                   "        pass\n",
                   lim);
  EXPECT_FALSE(r.passed());
  EXPECT_LT(r.seconds, 12.0);  // killed, not left running
  // The harness is alive and the sandbox still works afterwards.
  EXPECT_TRUE(py(sb, "print(1)\n").passed());
  // The process limit is per sandbox: a program may start a few processes.
  lim.max_processes = 8;
  RunResult cap = py(sb,
                     "import os, sys\n"
                     "kids = []\n"
                     "try:\n"
                     "    for i in range(50):\n"
                     "        pid = os.fork()\n"
                     "        if pid == 0:\n"
                     "            import time; time.sleep(5); os._exit(0)\n"
                     "        kids.append(pid)\n"
                     "except OSError:\n"
                     "    print('limited', len(kids)); sys.exit(0)\n"
                     "print('unlimited'); sys.exit(1)\n",
                     lim);
  EXPECT_TRUE(cap.passed()) << cap.out << cap.err;
  EXPECT_EQ(cap.out.rfind("limited", 0), 0u) << cap.out;
}

TEST(Sandbox, BigAllocationFails) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  RunResult r = py(sb, "x = bytearray(20 * 1024**3)\nprint(len(x))\n");
  EXPECT_FALSE(r.passed());
  EXPECT_NE(r.err.find("MemoryError"), std::string::npos) << r.err;
}

TEST(Sandbox, FileSizeAndOpenFilesLimited) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  SandboxLimits lim;
  lim.max_file_bytes = 1 << 20;
  RunResult f = py(sb, "open('big', 'wb').write(b'x' * (4 << 20))\n", lim);
  EXPECT_FALSE(f.passed());
  // Python ignores SIGXFSZ, so the write fails with EFBIG; other programs die of SIGXFSZ.
  EXPECT_TRUE(f.term_signal == SIGXFSZ || f.err.find("File too large") != std::string::npos) << f.err;
  lim.max_open_files = 32;
  RunResult o = py(sb, "fs = [open('f%d' % i, 'w') for i in range(100)]\n", lim);
  EXPECT_FALSE(o.passed());
  EXPECT_NE(o.err.find("Too many open files"), std::string::npos) << o.err;
}

TEST(Sandbox, NetworkBlocked) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  SandboxLimits lim;
  lim.wall_seconds = 5;
  RunResult r = py(sb,
                   "import socket\n"
                   "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
                   "s.settimeout(3)\n"
                   "s.connect(('1.1.1.1', 53))\n"
                   "print('connected')\n",
                   lim);
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(r.out.find("connected"), std::string::npos);
  EXPECT_FALSE(r.timed_out);  // fails at once: no route in an empty network namespace
}

TEST(Sandbox, NoAccessToHomeOrRepo) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  std::string readme = repo_dir() + "/README.md";
  ASSERT_TRUE(std::filesystem::exists(readme)) << readme;
  RunResult r = py(sb, "print(open('" + readme + "').read()[:10])\n");
  EXPECT_FALSE(r.passed());
  EXPECT_NE(r.err.find("FileNotFoundError"), std::string::npos) << r.err;
  const char* home = getenv("HOME");
  if (home && std::filesystem::is_directory(home) && std::string(home) != "/tmp") {
    RunResult h = py(sb, std::string("import os; print(os.listdir('") + home + "'))\n");
    EXPECT_FALSE(h.passed()) << h.out;
  }
}

TEST(Sandbox, CannotWriteOutsideTmp) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  std::string dir = s0::testing::temp_dir("sandbox_write");
  std::string target = dir + "/pwned.txt";
  for (const std::string& path : {target, std::string("/usr/pwned.txt"), repo_dir() + "/pwned.txt",
                                   std::string("/pwned.txt")}) {
    RunResult r = py(sb, "open('" + path + "', 'w').write('x')\n");
    EXPECT_FALSE(r.passed()) << path;
    EXPECT_FALSE(std::filesystem::exists(path)) << path;
  }
  std::filesystem::remove_all(dir);
}

TEST(Sandbox, CleanEnvironment) {
  REQUIRE_BWRAP();
  setenv("S0_SECRET", "1", 1);
  Sandbox sb = iso();
  RunResult r = py(sb, "import os\nprint(sorted(os.environ))\nassert 'S0_SECRET' not in os.environ\n");
  unsetenv("S0_SECRET");
  EXPECT_TRUE(r.passed()) << r.out << r.err;
  EXPECT_NE(r.out.find("'HOME'"), std::string::npos);
  EXPECT_NE(r.out.find("'PATH'"), std::string::npos);
}

TEST(Sandbox, CannotSignalParent) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  std::string me = std::to_string(getpid());
  RunResult r = py(sb, "import os, signal\nos.kill(" + me + ", signal.SIGKILL)\n");
  EXPECT_FALSE(r.passed());  // no such process in the sandbox's pid namespace
  EXPECT_NE(r.err.find("ProcessLookupError"), std::string::npos) << r.err;
  // Its parent in the sandbox is the namespace's init, which ignores SIGKILL from inside.
  RunResult p = py(sb, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('alive')\n");
  EXPECT_EQ(p.out, "alive\n") << p.err;
  // The harness is alive (this line runs) and the sandbox still works.
  EXPECT_TRUE(py(sb, "print(1)\n").passed());
}

TEST(Sandbox, HugeOutputTruncated) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  SandboxLimits lim;
  lim.max_output_bytes = 1 << 16;
  RunResult r = py(sb,
                   "import sys\nb = 'x' * (1 << 20)\n"
                   "while True: sys.stdout.write(b)\n",
                   lim);
  EXPECT_TRUE(r.output_truncated);
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(r.out.size() + r.err.size(), lim.max_output_bytes);
  EXPECT_LT(r.seconds, 9.0);  // stopped at the cap, not at the wall clock (10 s)
  // Below the cap: nothing lost, both streams kept.
  RunResult s = py(sb, "import sys\nprint('o' * 1000)\nprint('e' * 1000, file=sys.stderr)\n");
  EXPECT_TRUE(s.passed());
  EXPECT_FALSE(s.output_truncated);
  EXPECT_EQ(s.out.size(), 1001u);
  EXPECT_EQ(s.err.size(), 1001u);
}

TEST(Sandbox, ProgramIgnoringStdin) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  // The program never reads its (large) stdin and exits: no SIGPIPE, no hang.
  RunResult r = sb.run({"python3", "-c", "print('done')"}, std::string(4 << 20, 'a'));
  EXPECT_TRUE(r.passed()) << r.err;
  EXPECT_EQ(r.out, "done\n");
}

TEST(Sandbox, RunAllKeepsOrder) {
  REQUIRE_BWRAP();
  Sandbox sb = iso();
  std::vector<std::pair<std::vector<std::string>, std::string>> jobs;
  for (int i = 0; i < 8; ++i) {
    // Later jobs finish first, so a pool that returned completion order would fail.
    std::string code = "import time, sys\ntime.sleep(" + std::to_string(0.05 * (8 - i)) + ")\nprint(" +
                       std::to_string(i) + ")\nsys.exit(" + std::to_string(i % 2) + ")\n";
    jobs.push_back({kPy, code});
  }
  auto res = s0::eval::run_all(sb, jobs, SandboxLimits{}, 4);
  ASSERT_EQ(res.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(res[i].out, std::to_string(i) + "\n") << res[i].err;
    EXPECT_EQ(res[i].passed(), i % 2 == 0);
  }
}

int count_fds() {
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)e;
    ++n;
  }
  return n;
}

TEST(Sandbox, NoFdOrZombieLeaks) {
  if (!have_python()) GTEST_SKIP() << "/usr/bin/python3 missing";
  std::vector<Sandbox> boxes = {Sandbox()};
  if (!Sandbox::detect_bwrap().empty()) boxes.push_back(iso());
  int before = count_fds();
  SandboxLimits lim;
  lim.wall_seconds = 0.3;
  lim.max_output_bytes = 1000;
  for (const Sandbox& sb : boxes) {
    py(sb, "print(1)\n");
    py(sb, "while True: pass\n", lim);
    py(sb, "while True: print('z' * 100)\n", lim);
    sb.run({"no-such-program-s0"}, "x");
    std::vector<std::pair<std::vector<std::string>, std::string>> jobs(6, {kPy, "print(2)\n"});
    s0::eval::run_all(sb, jobs, lim, 3);
  }
  EXPECT_EQ(count_fds(), before);
  errno = 0;
  EXPECT_EQ(waitpid(-1, nullptr, WNOHANG), -1);  // no unreaped child of ours
  EXPECT_EQ(errno, ECHILD);
}

TEST(Sandbox, BrokenOrOldBwrap) {
  // A missing sandbox binary is a failed run (exit 127), never a pass or a crash.
  RunResult r = Sandbox::with_bwrap("/nonexistent/bwrap").run(kPy, "print(1)\n");
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(r.exit_code, 127);
  REQUIRE_BWRAP();
  // The option set for bwrap < 0.8 still isolates.
  Sandbox old = Sandbox::with_bwrap(Sandbox::detect_bwrap(), false);
  RunResult o = py(old, "import os\nprint(os.getcwd(), os.path.exists('" + repo_dir() + "'))\n");
  EXPECT_TRUE(o.passed()) << o.err;
  EXPECT_EQ(o.out, "/tmp False\n");
  SandboxLimits lim;
  lim.wall_seconds = 0.5;
  RunResult t = py(old, "while True: pass\n", lim);
  EXPECT_TRUE(t.timed_out);
  EXPECT_EQ(t.term_signal, 9);
  EXPECT_EQ(t.exit_code, -1);
}

TEST(Sandbox, CreateRequiresBwrapOrUnsafe) {
  if (Sandbox::detect_bwrap().empty()) {
    EXPECT_THROW(Sandbox::create(false), s0::Error);
    try {
      Sandbox::create(false);
    } catch (const s0::Error& e) {
      EXPECT_NE(std::string(e.what()).find("--unsafe-exec"), std::string::npos);
    }
  } else {
    EXPECT_TRUE(Sandbox::create(false).isolated());
  }
  EXPECT_NO_THROW(Sandbox::create(true));
}

TEST(Sandbox, UnsafeModeStillHasLimitsAndTimeout) {
  if (!have_python()) GTEST_SKIP() << "/usr/bin/python3 missing";
  // create(true) prefers bwrap when it works; a default-constructed Sandbox is the unsafe mode
  // that create(true) returns on a machine without bwrap.
  EXPECT_NO_THROW(Sandbox::create(true));
  Sandbox sb;
  ASSERT_FALSE(sb.isolated());
  setenv("S0_SECRET", "1", 1);
  RunResult r = py(sb, "import os, sys\nprint(os.getcwd(), os.environ.get('HOME'), 'S0_SECRET' in os.environ)\n"
                       "print(sys.stdin.read() if False else 'ok')\n");
  unsetenv("S0_SECRET");
  ASSERT_TRUE(r.passed()) << r.err;
  EXPECT_NE(r.out.find("/tmp/s0-sandbox-"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("/tmp False"), std::string::npos) << r.out;
  // The private cwd is removed afterwards.
  std::string cwd = r.out.substr(0, r.out.find(' '));
  EXPECT_FALSE(std::filesystem::exists(cwd)) << cwd;

  RunResult in = sb.run({"python3", "-c", "import sys; print(sys.stdin.read()[::-1])"}, "abc");
  EXPECT_EQ(in.out, "cba\n");

  SandboxLimits lim;
  lim.wall_seconds = 1;
  // In unsafe mode RLIMIT_NPROC counts every process of the user (here nobody, shared with
  // sandboxes of tests running in parallel), so spawning may fail: that must not end the loop.
  RunResult t = py(sb,
                   "import subprocess\ntry:\n    subprocess.Popen(['sleep', '983'])\nexcept OSError:\n    pass\n"
                   "while True: pass\n",
                   lim);
  EXPECT_TRUE(t.timed_out);
  EXPECT_LT(t.seconds, 10.0);  // killed, not left running
  usleep(200 * 1000);
  EXPECT_TRUE(gone({"sleep", "983"}));

  // Fork bomb: capped by RLIMIT_NPROC, ended by the wall clock with the whole group.
  lim.wall_seconds = 2;
  RunResult fb = py(sb, "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", lim);
  EXPECT_FALSE(fb.passed());
  EXPECT_LT(fb.seconds, 12.0);  // killed, not left running
  lim.max_processes = 8;
  RunResult cap = py(sb,
                     "import os, sys\n"
                     "kids = []\n"
                     "try:\n"
                     "    for i in range(50):\n"
                     "        pid = os.fork()\n"
                     "        if pid == 0:\n"
                     "            import time; time.sleep(5); os._exit(0)\n"
                     "        kids.append(pid)\n"
                     "except OSError:\n"
                     "    print('limited', len(kids)); sys.exit(0)\n"
                     "print('unlimited'); sys.exit(1)\n",
                     lim);
  EXPECT_TRUE(cap.passed()) << cap.out << cap.err;
  lim.max_processes = 64;

  RunResult m = py(sb, "x = bytearray(20 * 1024**3)\n");
  EXPECT_FALSE(m.passed());
  EXPECT_NE(m.err.find("MemoryError"), std::string::npos) << m.err;

  lim.max_output_bytes = 4096;
  lim.wall_seconds = 5;
  RunResult o = py(sb, "import sys\nwhile True: sys.stdout.write('y' * 65536)\n", lim);
  EXPECT_TRUE(o.output_truncated);
  EXPECT_EQ(o.out.size(), 4096u);
}

}  // namespace
