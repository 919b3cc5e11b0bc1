// `s0 launch --nproc N -- <command>`: torchrun's job for a machine without Python. Starts N
// local ranks with the environment torchrun gives its workers (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), waits for them, and when one fails reports
// which, stops the others and exits with its status. Also: running a subcommand as one rank
// of a job (run_distributed).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "s0/dist/dist.h"
#include "s0/util/error.h"

namespace s0::cli {

namespace {

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(std::string("s0 launch: socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    throw Error(std::string("s0 launch: cannot find a free port: ") + std::strerror(errno));
  }
  close(fd);
  return ntohs(a.sin_port);
}

std::string self_exe() {
  char b[4096];
  const ssize_t n = readlink("/proc/self/exe", b, sizeof b - 1);
  if (n <= 0) throw Error("s0 launch: cannot find the s0 binary (/proc/self/exe)");
  return std::string(b, static_cast<size_t>(n));
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int s = WTERMSIG(status);
    return "was killed by signal " + std::to_string(s) + " (" + strsignal(s) + ")";
  }
  return "stopped";
}

}  // namespace

void refuse_distributed(const std::string& name) {
  const char* ws = std::getenv("WORLD_SIZE");
  if (name == "launch" || !ws || std::string(ws).empty() || std::string(ws) == "1") return;
  throw Error("s0 " + name + " does not run as a distributed job (WORLD_SIZE=" + ws +
              " is set); run it as one process. Distributed: s0 train, s0 collect, s0 eval, s0 experiment, s0 demo");
}

int run_distributed(const Action& action) {
  auto env = dist::env_from_environment();
  if (!env || env->world_size == 1) return action();
  dist::World world(*env);
  dist::ScopedWorld scope(world);
  if (!world.root()) {
    // The job's results come from rank 0: the others' stdout goes nowhere.
    std::fflush(stdout);
    const int fd = open("/dev/null", O_WRONLY);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      close(fd);
    }
  }
  try {
    const int rc = action();
    world.finish(rc == 0 ? "" : "exit status " + std::to_string(rc));
    return rc;
  } catch (const std::exception& e) {
    world.finish(e.what());
    throw;
  }
}

Action add_launch(CLI::App& app) {
  struct Opts {
    int nproc = 2, port = 0;
    std::string addr = "127.0.0.1";
    double timeout = 0, grace = 5;
    std::vector<std::string> cmd;
  };
  auto o = std::make_shared<Opts>();
  app.add_option("--nproc", o->nproc, "Ranks (processes) to start on this machine")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--master-port", o->port, "Port of rank 0's store (default: a free port)");
  app.add_option("--master-addr", o->addr, "Address the ranks reach rank 0's store at")
      ->capture_default_str();
  app.add_option(
      "--timeout", o->timeout,
      "Seconds a rank may be silent before the others stop (S0_DIST_TIMEOUT; default 300)");
  app.add_option("--grace", o->grace,
                 "Seconds the other ranks get to stop by themselves after one fails")
      ->capture_default_str();
  app.add_option("command", o->cmd, "After --: an s0 subcommand with its options (or any program)")
      ->required();
  return [o]() {
    static const std::set<std::string> subcommands = {
        "init-model", "generate", "tokenize",   "detokenize", "train", "states", "lora",  "collect",
        "eval",       "check",    "experiment", "analyze",    "serve", "demo",   "launch"};
    std::vector<std::string> argv = o->cmd;
    if (argv[0] == "s0" || subcommands.count(argv[0])) {
      if (argv[0] == "s0") argv.erase(argv.begin());
      if (argv.empty()) throw Error("s0 launch: no command after --");
      argv.insert(argv.begin(), self_exe());
    }
    const int port = o->port > 0 ? o->port : free_port();
    const int N = o->nproc;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    std::vector<pid_t> pids(N, -1);
    std::fflush(nullptr);
    for (int r = 0; r < N; ++r) {
      const pid_t pid = fork();
      if (pid < 0) throw Error(std::string("s0 launch: fork: ") + std::strerror(errno));
      if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        setenv("RANK", std::to_string(r).c_str(), 1);
        setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
        setenv("GROUP_RANK", "0", 1);
        setenv("WORLD_SIZE", std::to_string(N).c_str(), 1);
        setenv("LOCAL_WORLD_SIZE", std::to_string(N).c_str(), 1);
        setenv("MASTER_ADDR", o->addr.c_str(), 1);
        setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
        unsetenv("TORCHELASTIC_USE_AGENT_STORE");
        if (o->timeout > 0) setenv("S0_DIST_TIMEOUT", std::to_string(o->timeout).c_str(), 1);
        std::vector<char*> av;
        for (auto& a : argv) av.push_back(a.data());
        av.push_back(nullptr);
        execvp(av[0], av.data());
        std::fprintf(stderr, "s0 launch: cannot run %s: %s\n", av[0], std::strerror(errno));
        _exit(127);
      }
      pids[r] = pid;
    }
    using Clock = std::chrono::steady_clock;
    int alive = N, result = 0, failed_rank = -1, forwarded = 0;
    Clock::time_point failed_at{};
    bool termed = false, killed = false;
    while (alive > 0) {
      if (g_signal && g_signal != forwarded) {
        forwarded = g_signal;
        for (pid_t p : pids)
          if (p > 0) kill(p, forwarded);
      }
      int status = 0;
      const pid_t p = waitpid(-1, &status, WNOHANG);
      if (p > 0) {
        int r = 0;
        while (r < N && pids[r] != p) ++r;
        if (r == N) continue;
        pids[r] = -1;
        --alive;
        const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if (!ok && failed_rank < 0) {
          failed_rank = r;
          result = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          failed_at = Clock::now();
          std::fprintf(stderr, "s0 launch: rank %d (pid %d) %s%s\n", r, static_cast<int>(p),
                       describe(status).c_str(), alive ? "; stopping the other ranks" : "");
        }
        continue;
      }
      if (p < 0 && errno != EINTR) break;
      if (failed_rank >= 0) {
        const double since = std::chrono::duration<double>(Clock::now() - failed_at).count();
        if (!termed && since > o->grace) {
          termed = true;
          for (pid_t q : pids)
            if (q > 0) kill(q, SIGTERM);
        }
        if (!killed && since > o->grace + 5) {
          killed = true;
          for (pid_t q : pids)
            if (q > 0) kill(q, SIGKILL);
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (failed_rank < 0 && g_signal) return 128 + static_cast<int>(g_signal);
    return result;
  };
}

}  // namespace s0::cli
