#include "s0/eval/sandbox.h"

#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "s0/util/error.h"
#include "s0/util/interrupt.h"

namespace s0::eval {
namespace {

constexpr const char* kPath = "/usr/local/bin:/usr/bin:/bin";
constexpr uid_t kNobody = 65534;

bool is_executable(const std::string& p) {
  struct stat st{};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
}

// Resolves a program name on `path` (colon separated); names with a '/' are taken as is.
std::string resolve(const std::string& name, const std::string& path) {
  if (name.find('/') != std::string::npos) return name;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t end = path.find(':', pos);
    if (end == std::string::npos) end = path.size();
    std::string dir = path.substr(pos, end - pos);
    if (!dir.empty()) {
      std::string cand = dir + "/" + name;
      if (is_executable(cand)) return cand;
    }
    pos = end + 1;
  }
  return "";
}

// A limit <= 0 means none.
rlim_t to_rlim(double v) {
  if (!(v > 0)) return RLIM_INFINITY;
  return static_cast<rlim_t>(std::ceil(v));
}

struct Plan {
  std::vector<std::string> argv;  // argv[0] is an absolute path
  std::vector<std::string> env;
  std::string cwd;
  bool drop_to_nobody = false;
  bool nproc_before_exec = true;
  bool info_fd = false;  // pass a pipe as fd 3 (bwrap --info-fd 3: reports the sandbox init's pid)
};

void unlink_tree(const std::string& dir) {
  if (dir.empty()) return;
  ::nftw(
      dir.c_str(),
      [](const char* p, const struct stat*, int flag, struct FTW*) -> int {
        if (flag == FTW_DP || flag == FTW_D) {
          ::chmod(p, 0700);
          ::rmdir(p);
        } else {
          ::unlink(p);
        }
        return 0;
      },
      32, FTW_DEPTH | FTW_PHYS);
}

void set_nonblock(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Forks and execs plan.argv with limits; drains output with poll; kills the process group on
// timeout / output overflow / exit of the main child. Always reaps the child, closes every fd.
RunResult execute(const Plan& plan, const std::string& stdin_data, const SandboxLimits& lim) {
  using clock = std::chrono::steady_clock;
  RunResult res;
  const auto start = clock::now();

  // Everything the child needs is prepared before fork (only async-signal-safe calls there).
  std::vector<char*> cargv, cenv;
  for (const auto& a : plan.argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : plan.env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);

  int in_sv[2] = {-1, -1}, out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, info_p[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in_sv) != 0 ||
      ::pipe2(out_p, O_CLOEXEC) != 0 || ::pipe2(err_p, O_CLOEXEC) != 0 ||
      (plan.info_fd && ::pipe2(info_p, O_CLOEXEC) != 0)) {
    int e = errno;
    for (int* fd : {&in_sv[0], &in_sv[1], &out_p[0], &out_p[1], &err_p[0], &err_p[1], &info_p[0], &info_p[1]})
      close_fd(*fd);
    throw Error(std::string("sandbox: cannot create pipes: ") + std::strerror(e));
  }

  const rlim_t cpu = to_rlim(lim.cpu_seconds);
  struct rlimit r_cpu{cpu, cpu == RLIM_INFINITY ? RLIM_INFINITY : cpu + 1};  // SIGXCPU, then SIGKILL
  struct rlimit r_as{to_rlim(lim.memory_bytes), to_rlim(lim.memory_bytes)};
  struct rlimit r_nofile{to_rlim(lim.max_open_files), to_rlim(lim.max_open_files)};
  struct rlimit r_fsize{to_rlim(lim.max_file_bytes), to_rlim(lim.max_file_bytes)};
  struct rlimit r_nproc{to_rlim(lim.max_processes), to_rlim(lim.max_processes)};
  struct rlimit r_core{0, 0};
  const char* cwd = plan.cwd.c_str();
  const bool drop = plan.drop_to_nobody;
  const bool nproc = plan.nproc_before_exec;

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    for (int* fd : {&in_sv[0], &in_sv[1], &out_p[0], &out_p[1], &err_p[0], &err_p[1], &info_p[0], &info_p[1]})
      close_fd(*fd);
    throw Error(std::string("sandbox: fork failed: ") + std::strerror(e));
  }
  if (pid == 0) {
    // Child.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::dup2(in_sv[1], 0);
    ::dup2(out_p[1], 1);
    ::dup2(err_p[1], 2);
    unsigned first_closed = 3;
    if (info_p[1] >= 0) {
      if (info_p[1] == 3)
        ::fcntl(3, F_SETFD, 0);
      else
        ::dup2(info_p[1], 3);
      first_closed = 4;
    }
#ifdef SYS_close_range
    ::syscall(SYS_close_range, first_closed, ~0u, 0u);
#endif
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGXFSZ, SIGXCPU})
      ::signal(s, SIG_DFL);
    auto set = [](int which, const struct rlimit& r) {
      return r.rlim_cur == RLIM_INFINITY || ::setrlimit(which, &r) == 0;  // none: keep the caller's
    };
    bool ok = set(RLIMIT_CPU, r_cpu) && set(RLIMIT_AS, r_as) && set(RLIMIT_NOFILE, r_nofile) &&
              set(RLIMIT_FSIZE, r_fsize) && set(RLIMIT_CORE, r_core);
    if (ok && drop) {
      // Raw syscalls: glibc's wrappers broadcast to all threads of the (forked, now
      // single-threaded) process, which is not async-signal-safe after fork.
      ok = ::syscall(SYS_setgroups, 0, nullptr) == 0 && ::syscall(SYS_setgid, kNobody) == 0 &&
           ::syscall(SYS_setuid, kNobody) == 0;
    }
    if (ok && nproc) ok = set(RLIMIT_NPROC, r_nproc);
    if (ok) ok = ::chdir(cwd) == 0;
    if (ok) ::execve(cargv[0], cargv.data(), cenv.data());
    const char msg[] = "sandbox: cannot start the program (setup or exec failed)\n";
    ssize_t w = ::write(2, msg, sizeof(msg) - 1);
    (void)w;
    ::_exit(127);
  }

  // Parent.
  ::setpgid(pid, pid);  // both sides set it: no window where the group does not exist
  close_fd(in_sv[1]);
  close_fd(out_p[1]);
  close_fd(err_p[1]);
  close_fd(info_p[1]);
  int in_fd = in_sv[0], out_fd = out_p[0], err_fd = err_p[0], info_fd = info_p[0];
  if (info_fd >= 0) set_nonblock(info_fd);
  std::string info;
  // bwrap --info-fd writes {"child-pid": N, ...}: N is the sandbox's pid-namespace init (in
  // our pid namespace), a child of bwrap.
  auto read_info = [&] {
    char b[512];
    while (info_fd >= 0) {
      ssize_t n = ::read(info_fd, b, sizeof(b));
      if (n > 0) {
        info.append(b, static_cast<size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close_fd(info_fd);
      } else {
        break;
      }
    }
  };
  auto sandbox_init_pid = [&]() -> pid_t {
    size_t k = info.find("\"child-pid\"");
    if (k == std::string::npos) return -1;
    k = info.find(':', k);
    if (k == std::string::npos) return -1;
    long v = std::strtol(info.c_str() + k + 1, nullptr, 10);
    return v > 1 ? static_cast<pid_t>(v) : -1;
  };
  set_nonblock(in_fd);
  set_nonblock(out_fd);
  set_nonblock(err_fd);
  size_t in_off = 0;
  if (stdin_data.empty()) close_fd(in_fd);

  const auto deadline = start + std::chrono::duration_cast<clock::duration>(
                                    std::chrono::duration<double>(std::max(0.0, lim.wall_seconds)));
  bool exited = false;  // main child has exited (zombie, not reaped yet: its pid holds the group id)
  bool killed = false;
  int status = 0;
  auto child_exited = [&] {
    siginfo_t si{};
    return ::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid;
  };
  auto kill_group = [&] {
    if (!killed) {
      if (!exited && plan.info_fd) {
        // Ordered teardown: kill the sandbox's init first (the kernel then kills every process
        // in its pid namespace at once) and give bwrap up to 0.2 s to notice and exit; the
        // group kill below covers the rest (bwrap --die-with-parent would also take the
        // namespace down). bwrap is still alive here, so the init pid cannot have been reused,
        // except in the instant between its death and bwrap's exit.
        read_info();
        pid_t init = sandbox_init_pid();
        if (init > 0) {
          ::kill(init, SIGKILL);
          for (int i = 0; i < 100 && !child_exited(); ++i) ::usleep(2000);
        }
      }
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
      killed = true;
    }
  };
  std::vector<char> buf(1 << 16);
  size_t total = 0;

  for (;;) {
    if (!exited) {
      if (child_exited()) {
        exited = true;
        kill_group();  // the main program is done: no descendant may outlive it
      }
    }
    if (exited && out_fd < 0 && err_fd < 0) break;
    auto now = clock::now();
    if (!exited && !res.timed_out && now >= deadline) {
      res.timed_out = true;
      kill_group();
    }
    // A descendant that escaped the group (unsafe mode + setsid) may hold the pipes open.
    if (exited && now >= deadline + std::chrono::seconds(2)) break;

    std::vector<pollfd> pfds;
    if (in_fd >= 0) pfds.push_back({in_fd, POLLOUT, 0});
    if (out_fd >= 0) pfds.push_back({out_fd, POLLIN, 0});
    if (err_fd >= 0) pfds.push_back({err_fd, POLLIN, 0});
    if (info_fd >= 0) pfds.push_back({info_fd, POLLIN, 0});
    int timeout_ms = 10;  // short ticks so that the exit of the main child is seen promptly
    if (!exited && !killed) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(left, 0, 10));
    }
    int n = ::poll(pfds.empty() ? nullptr : pfds.data(), pfds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    for (const auto& p : pfds) {
      if (!p.revents) continue;
      if (p.fd < 0) continue;
      if (p.fd == info_fd) {
        read_info();
        continue;
      }
      if (p.fd == in_fd) {
        if (p.revents & (POLLERR | POLLHUP)) {
          close_fd(in_fd);
          continue;
        }
        ssize_t w = ::send(in_fd, stdin_data.data() + in_off, stdin_data.size() - in_off, MSG_NOSIGNAL);
        if (w > 0) {
          in_off += static_cast<size_t>(w);
          if (in_off >= stdin_data.size()) {
            ::shutdown(in_fd, SHUT_WR);
            close_fd(in_fd);
          }
        } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          close_fd(in_fd);
        }
        continue;
      }
      if (p.fd < 0 || (p.fd != out_fd && p.fd != err_fd)) continue;  // closed in this round
      int& fd = (p.fd == out_fd) ? out_fd : err_fd;
      std::string& dst = (p.fd == out_fd) ? res.out : res.err;
      ssize_t rd = ::read(fd, buf.data(), buf.size());
      if (rd > 0) {
        size_t take = static_cast<size_t>(rd);
        if (total + take > lim.max_output_bytes) {
          take = lim.max_output_bytes - total;
          res.output_truncated = true;
        }
        dst.append(buf.data(), take);
        total += take;
        if (res.output_truncated) {
          kill_group();
          close_fd(out_fd);
          close_fd(err_fd);
          break;
        }
      } else if (rd == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        close_fd(fd);
      }
    }
  }

  close_fd(in_fd);
  close_fd(out_fd);
  close_fd(err_fd);
  if (!exited) kill_group();
  close_fd(info_fd);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) {
    res.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    res.exit_code = -1;
    res.term_signal = WTERMSIG(status);
  }
  res.seconds = std::chrono::duration<double>(clock::now() - start).count();
  return res;
}

std::vector<std::string> clean_env() {
  return {std::string("PATH=") + kPath, "HOME=/tmp", "LANG=C.UTF-8"};
}

// The bwrap command line up to (not including) the program.
// `modern` adds options of bwrap >= 0.8 (--disable-userns, --size); older versions get the
// rest, which is the isolation itself.
std::vector<std::string> bwrap_prefix(const std::string& bwrap, const SandboxLimits& lim, bool modern) {
  std::vector<std::string> a = {bwrap,
                                "--unshare-user",
                                "--unshare-pid",
                                "--unshare-net",
                                "--unshare-ipc",
                                "--unshare-uts",
                                "--unshare-cgroup-try",
                                "--die-with-parent",
                                "--info-fd",
                                "3",
                                "--new-session",
                                "--hostname",
                                "sandbox",
                                "--clearenv",
                                "--setenv", "PATH", kPath,
                                "--setenv", "HOME", "/tmp",
                                "--setenv", "LANG", "C.UTF-8",
                                "--ro-bind", "/usr", "/usr"};
  for (const char* top : {"/bin", "/sbin", "/lib", "/lib32", "/lib64"}) {
    struct stat st{};
    if (::lstat(top, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t n = ::readlink(top, target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = 0;
      a.insert(a.end(), {"--symlink", target, top});
    } else if (S_ISDIR(st.st_mode)) {
      a.insert(a.end(), {"--ro-bind", top, top});
    }
  }
  // Only the /etc files that the loader, locale and interpreters need; no passwd/shadow/hosts.
  for (const char* f : {"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
                        "/etc/localtime", "/etc/python3", "/etc/python3.11", "/etc/ssl/openssl.cnf"}) {
    a.insert(a.end(), {"--ro-bind-try", f, f});
  }
  a.insert(a.end(), {"--proc", "/proc", "--dev", "/dev"});
  if (modern) {
    // No nested user namespaces; /tmp capped (it lives in memory).
    int64_t tmp_size = std::max<int64_t>(64LL << 20, 4 * lim.max_file_bytes);
    a.insert(a.end(), {"--disable-userns", "--size", std::to_string(tmp_size)});
  }
  a.insert(a.end(), {"--tmpfs", "/tmp", "--remount-ro", "/", "--chdir", "/tmp", "--"});
  return a;
}

std::string find_bwrap() {
  const char* env_path = std::getenv("PATH");
  std::string p = resolve("bwrap", env_path ? env_path : "");
  if (p.empty()) p = resolve("bwrap", "/usr/bin:/usr/local/bin:/bin");
  return p;
}

}  // namespace

namespace {
struct Detected {
  std::string path;
  bool modern = true;
};
}  // namespace

static const Detected& detected() {
  static const Detected d = [] {
    Detected out;
    std::string b = find_bwrap();
    if (b.empty()) return out;
    SandboxLimits lim;
    lim.wall_seconds = 10;
    for (bool modern : {true, false}) {
      Sandbox sb = Sandbox::with_bwrap(b, modern);
      try {
        RunResult r = sb.run({"/bin/sh", "-c", "exit 0"}, "", lim);
        if (r.exit_code == 0) {
          out.path = b;
          out.modern = modern;
          return out;
        }
      } catch (const std::exception&) {
      }
    }
    return out;
  }();
  return d;
}

std::string Sandbox::detect_bwrap() { return detected().path; }

Sandbox Sandbox::with_bwrap(const std::string& bwrap, bool modern) {
  Sandbox sb;
  sb.isolated_ = true;
  sb.bwrap_ = bwrap;
  sb.modern_ = modern;
  return sb;
}

Sandbox Sandbox::create(bool allow_unsafe) {
  Sandbox sb;
  const Detected& d = detected();
  if (!d.path.empty()) return with_bwrap(d.path, d.modern);
  if (!allow_unsafe) {
    throw Error(
        "sandbox: bubblewrap (bwrap) is not installed or cannot create namespaces here, so model-written "
        "code cannot be isolated; install it (apt-get install bubblewrap) or pass --unsafe-exec to run "
        "the code without isolation (limits and timeout still apply)");
  }
  return sb;
}

RunResult Sandbox::run(const std::vector<std::string>& argv, const std::string& stdin_data,
                       const SandboxLimits& lim) const {
  if (argv.empty()) throw Error("sandbox: empty command");
  Plan plan;
  plan.env = clean_env();
  if (isolated_) {
    plan.argv = bwrap_prefix(bwrap_, lim, modern_);
    plan.info_fd = true;
    static const bool have_prlimit = is_executable("/usr/bin/prlimit");
    if (lim.max_processes <= 0) {
      plan.nproc_before_exec = false;  // not set: nothing to do
    } else if (have_prlimit) {
      // RLIMIT_NPROC set inside the sandbox's own user namespace counts only its processes.
      std::string n = std::to_string(lim.max_processes);
      std::string spec = "--nproc=";
      spec.append(n).append(":").append(n);
      plan.argv.insert(plan.argv.end(), {"/usr/bin/prlimit", spec, "--"});
      plan.nproc_before_exec = false;
    }
    plan.argv.insert(plan.argv.end(), argv.begin(), argv.end());
    plan.drop_to_nobody = ::geteuid() == 0;
    plan.cwd.assign(1, '/');  // (not = "/": GCC 12 -Wrestrict false positive)
    RunResult r = execute(plan, stdin_data, lim);
    // bwrap reports a program killed by signal S as exit status 128 + S.
    if (r.exit_code > 128 && r.exit_code <= 128 + 64) {
      r.term_signal = r.exit_code - 128;
      r.exit_code = -1;
    }
    return r;
  }
  // Unsafe mode.
  std::string prog = resolve(argv[0], kPath);
  if (prog.empty()) {
    RunResult r;
    r.exit_code = 127;
    r.err = "sandbox: program not found: " + argv[0] + "\n";
    return r;
  }
  char tmpl[] = "/tmp/s0-sandbox-XXXXXX";
  if (!::mkdtemp(tmpl)) throw Error(std::string("sandbox: mkdtemp failed: ") + std::strerror(errno));
  plan.cwd = tmpl;
  plan.argv = argv;
  plan.argv[0] = prog;
  plan.nproc_before_exec = true;
  // As root: run as nobody, so that RLIMIT_NPROC is enforced (root is exempt) and the program
  // cannot write wherever root can. The private cwd is handed to nobody.
  plan.drop_to_nobody = ::geteuid() == 0;
  if (plan.drop_to_nobody && ::chown(tmpl, kNobody, kNobody) != 0) {
    int e = errno;
    unlink_tree(plan.cwd);
    throw Error(std::string("sandbox: chown of the private directory failed: ") + std::strerror(e));
  }
  RunResult r;
  try {
    r = execute(plan, stdin_data, lim);
  } catch (...) {
    unlink_tree(plan.cwd);
    throw;
  }
  unlink_tree(plan.cwd);
  return r;
}

std::vector<RunResult> run_all(const Sandbox& sb,
                               const std::vector<std::pair<std::vector<std::string>, std::string>>& jobs,
                               const SandboxLimits& lim, int workers) {
  std::vector<RunResult> results(jobs.size());
  if (jobs.empty()) return results;
  int n = std::clamp<int>(workers, 1, static_cast<int>(jobs.size()));
  std::atomic<size_t> next{0};
  std::vector<std::string> errors(jobs.size());
  auto work = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= jobs.size()) return;
      note_progress();  // a distributed job's peers see this rank advance (util/interrupt.h)
      try {
        results[i] = sb.run(jobs[i].first, jobs[i].second, lim);
      } catch (const std::exception& e) {
        results[i] = RunResult{};
        results[i].err = e.what();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return results;
}

}  // namespace s0::eval
