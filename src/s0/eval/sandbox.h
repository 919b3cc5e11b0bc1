#pragma once
// Sandboxed execution of untrusted programs (model-written code) for verification.
//
// Isolated mode runs the program under bubblewrap (`bwrap`, found on PATH or /usr/bin at run
// time): new user/pid/net/ipc/uts/cgroup namespaces (no network), a read-only /usr (plus the
// /bin, /lib, /lib64, /sbin links and a few /etc files the dynamic loader needs), fresh
// /proc and /dev, a read-only root, a private size-capped tmpfs /tmp as cwd (the only
// writable place), nothing of the caller's home or
// working tree, a cleared environment (PATH, HOME=/tmp, LANG=C.UTF-8 only).
//
// Limits: CPU time, address space, open files and file size are set with setrlimit in the
// forked child before it execs bwrap (they are inherited by everything in the sandbox). The
// process limit is set inside the sandbox through `prlimit --nproc` (util-linux) so that it
// counts only this sandbox's processes (RLIMIT_NPROC is accounted per user *and* user
// namespace); without /usr/bin/prlimit it falls back to setrlimit before bwrap. When the
// caller is root the child drops to uid/gid 65534 (nobody) before exec, so bwrap builds an
// unprivileged user namespace and root's exemption from RLIMIT_NPROC does not apply.
//
// Process tree: the child is put in its own process group; bwrap runs with --die-with-parent
// and --unshare-pid. To end a run, the sandbox's pid-namespace init (its pid comes from
// bwrap --info-fd) is SIGKILLed first, which makes the kernel kill every process in the
// namespace, then the group (bwrap) is SIGKILLed; bwrap's own death would also take the
// namespace down (--die-with-parent). Note: bwrap does not reap its namespace init itself, so
// a short-lived zombie of it is left to the system's init to reap (not to the caller). Wall-clock timeout (default
// 10 s), output over the cap, or the main program exiting while descendants linger all end
// in that kill; the child is always reaped and every fd closed (all fds are O_CLOEXEC).
//
// Output: stdout and stderr are drained with poll; once their total exceeds
// max_output_bytes the kept text is cut at the cap, output_truncated is set and the tree is
// killed (so printing 1 GB costs milliseconds, and is a fail). stdin is written through a
// non-blocking socket (MSG_NOSIGNAL: a child that never reads cannot raise SIGPIPE here).
//
// Unsafe mode (only when asked for, e.g. `--unsafe-exec`): plain fork/exec with the same
// rlimits (RLIMIT_NPROC then counts every process of the user, including those of other
// runs in parallel and of bwrap sandboxes running as the same user), timeout, group kill, clean
// environment and a private mkdtemp cwd that is removed afterwards; as root it also drops to
// nobody (so RLIMIT_NPROC applies and root-only paths are out of reach). No namespaces: the
// program can reach the network and whatever the user can read or write, and a program that
// calls setsid() can escape the group kill.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace s0::eval {

// A resource limit <= 0 means "not set here" (the caller's own limit stays); the wall clock
// and the output cap always apply.
struct SandboxLimits {
  double wall_seconds = 10;
  double cpu_seconds = 10;
  int64_t memory_bytes = 1LL << 30;  // RLIMIT_AS
  int max_processes = 64;
  int max_open_files = 256;
  int64_t max_file_bytes = 16 << 20;
  size_t max_output_bytes = 1 << 20;  // stdout + stderr together
};

struct RunResult {
  int exit_code = -1;   // -1 when killed by a signal
  int term_signal = 0;  // the signal that ended it, 0 when it exited
  bool timed_out = false;
  bool output_truncated = false;
  std::string out, err;
  double seconds = 0;
  bool passed() const { return exit_code == 0 && !timed_out; }
};

class Sandbox {
 public:
  // Default-constructed: the unsafe mode (what create(true) returns without bwrap).
  Sandbox() = default;
  // bubblewrap when it is installed and a trial run works; otherwise unsafe mode when
  // allow_unsafe, else throws s0::Error explaining --unsafe-exec.
  static Sandbox create(bool allow_unsafe);
  bool isolated() const { return isolated_; }
  const std::string& bwrap_path() const { return bwrap_; }
  // Runs argv (argv[0] looked up on the sandbox PATH) with stdin_data in a fresh private
  // writable tmp dir as cwd. Thread-safe (const, no shared state).
  RunResult run(const std::vector<std::string>& argv, const std::string& stdin_data,
                const SandboxLimits& lim = {}) const;

  // Path of a working bwrap, or "" when none is installed or a trial run fails (cached).
  static std::string detect_bwrap();
  // An isolated sandbox using this bwrap binary, without a trial run; `modern`: also pass the
  // bwrap >= 0.8 options (--disable-userns, tmpfs --size).
  static Sandbox with_bwrap(const std::string& bwrap, bool modern = true);

 private:
  bool isolated_ = false;
  bool modern_ = true;
  std::string bwrap_;
};

// Runs many jobs (argv, stdin) with a pool of `workers` threads; results in input order.
std::vector<RunResult> run_all(const Sandbox& sb,
                               const std::vector<std::pair<std::vector<std::string>, std::string>>& jobs,
                               const SandboxLimits& lim, int workers);

}  // namespace s0::eval
