// The one translation unit that includes c10d (heavy headers: keep it that way).
#include "s0/dist/dist.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#ifdef S0_DIST_NO_GLOO
#include <ATen/ATen.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#else
#include "s0/dist/c10d_compat.h"
#endif
#ifdef S0_DIST_NCCL
// A CUDA libtorch with NCCL (CMake found both and defines S0_DIST_NCCL and USE_C10D_NCCL).
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include "s0/util/error.h"
#include "s0/util/interrupt.h"

namespace s0::dist {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

long parse_long(const char* var, const std::string& v, long lo, long hi) {
  size_t used = 0;
  long x = 0;
  try {
    x = std::stol(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v.size())
    throw Error("environment variable " + std::string(var) + "='" + v + "' is not an integer");
  if (x < lo || x > hi)
    throw Error("environment variable " + std::string(var) + "=" + v +
                " is out of range (expected " + std::to_string(lo) + " to " + std::to_string(hi) +
                ")");
  return x;
}

std::string getenv_str(const char* var) {
  const char* v = std::getenv(var);
  return v ? std::string(v) : std::string();
}

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string str(const std::vector<uint8_t>& b) { return {b.begin(), b.end()}; }

std::string hostname() {
  char h[256] = {};
  if (gethostname(h, sizeof h - 1) != 0) return "?";
  return h;
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr == "::1" || addr.rfind("127.", 0) == 0;
}

World* g_current = nullptr;

}  // namespace

std::optional<Env> env_from_environment() {
  const std::string ws = getenv_str("WORLD_SIZE");
  if (ws.empty()) return std::nullopt;
  Env e;
  e.world_size = static_cast<int>(parse_long("WORLD_SIZE", ws, 1, 1 << 20));
  const std::string rank = getenv_str("RANK");
  if (rank.empty()) {
    if (e.world_size > 1)
      throw Error("WORLD_SIZE=" + ws + " is set but RANK is not (each process needs RANK in 0.." +
                  std::to_string(e.world_size - 1) + "; torchrun and `s0 launch` set both)");
  } else {
    const long r = parse_long("RANK", rank, 0, 1 << 20);
    if (r >= e.world_size)
      throw Error("environment variable RANK=" + rank + " is not below WORLD_SIZE=" + ws +
                  " (ranks are 0.." + std::to_string(e.world_size - 1) + ")");
    e.rank = static_cast<int>(r);
  }
  const std::string lr = getenv_str("LOCAL_RANK");
  e.local_rank = lr.empty() ? e.rank : static_cast<int>(parse_long("LOCAL_RANK", lr, 0, 1 << 20));
  auto seconds = [](const char* var, double fallback) {
    const std::string to = getenv_str(var);
    if (to.empty()) return fallback;
    size_t used = 0;
    double t = 0;
    try {
      t = std::stod(to, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != to.size() || !(t > 0) || t > 1e7)
      throw Error("environment variable " + std::string(var) + "='" + to +
                  "' is not a positive number of seconds");
    return t;
  };
  e.timeout_s = seconds("S0_DIST_TIMEOUT", e.timeout_s);
  e.join_timeout_s = seconds("S0_DIST_JOIN_TIMEOUT", e.timeout_s);
  if (e.world_size > 1) {
    e.master_addr = getenv_str("MASTER_ADDR");
    if (e.master_addr.empty())
      throw Error("WORLD_SIZE=" + ws +
                  " needs MASTER_ADDR (the host of rank 0's store) in the environment");
    const std::string port = getenv_str("MASTER_PORT");
    if (port.empty())
      throw Error("WORLD_SIZE=" + ws +
                  " needs MASTER_PORT (the port of rank 0's store) in the environment");
    e.master_port = static_cast<int>(parse_long("MASTER_PORT", port, 1, 65535));
    if (getenv_str("TORCHELASTIC_USE_AGENT_STORE") == "True") {
      e.agent_store = true;
      const std::string attempt = getenv_str("TORCHELASTIC_RESTART_COUNT");
      e.store_prefix = "/worker/attempt_" + (attempt.empty() ? std::string("0") : attempt);
    }
  }
  return e;
}

// ---------------------------------------------------------------------------------------

struct World::Impl {
  Env env;
  std::string where;  // "host:port" of the store
  c10::intrusive_ptr<c10d::Store> store, mon_store;
#ifndef S0_DIST_NO_GLOO
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
#else
  struct NoGroup {
    void reset() {}
  } pg;
#endif
#ifdef S0_DIST_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  std::vector<std::string> info;  // per rank: "host pid N"
  std::thread monitor;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::atomic<bool> failed{false};
  std::string failure;
  Clock::time_point failed_at{};
  // This rank's progress (util/interrupt.h: poll_interrupt, note_progress; check() adds to
  // it too), published by the heartbeat thread as "prog/<rank>".
  static int64_t ticks() { return static_cast<int64_t>(progress_counter().load(std::memory_order_relaxed)); }
  std::atomic<bool> finishing{false};
  // S0_DIST_TEST_HANG=<rank>:<collective>: a test hook (never set in a real job): that rank's
  // main thread sleeps forever on entering the collective of that name.
  int hang_rank = -1;
  std::string hang_what;
  std::vector<char> exited, dead;
  std::map<std::string, int64_t> uses;
  CommStats stats;
  bool finished = false;
  double interval = 1;

  milliseconds timeout() const { return milliseconds(static_cast<int64_t>(env.timeout_s * 1000)); }
  milliseconds join_timeout() const {
    return milliseconds(static_cast<int64_t>(env.join_timeout_s * 1000));
  }
  std::string who(int r) const {
    std::string s = "rank " + std::to_string(r);
    if (r >= 0 && r < static_cast<int>(info.size()) && !info[r].empty()) s += " (" + info[r] + ")";
    return s;
  }
  void set_failure(const std::string& msg) {
    std::lock_guard<std::mutex> lk(mu);
    if (!failed) {
      failure = msg;
      failed_at = Clock::now();
      failed = true;
    }
  }
  void check() {
    note_progress();
    if (failed) {
      std::lock_guard<std::mutex> lk(mu);
      throw Error(failure);
    }
  }
  static std::string hb_key(int r) { return "hb/" + std::to_string(r); }
  static std::string exit_key(int r) { return "exit/" + std::to_string(r); }
  static std::string prog_key(int r) { return "prog/" + std::to_string(r); }

  // The test hook (S0_DIST_TEST_HANG): this rank's main thread stops here for good, while
  // its heartbeat thread goes on beating.
  void maybe_hang(const std::string& what) {
    if (hang_rank != env.rank || what != hang_what) return;
    std::fprintf(stderr, "rank %d: S0_DIST_TEST_HANG: the main thread hangs before '%s' (a test hook)\n",
                 env.rank, what.c_str());
    while (true) std::this_thread::sleep_for(std::chrono::hours(1));
  }

  // Rank `r`'s published progress (-1: none yet).
  int64_t progress_of(int r) {
    const std::string k = prog_key(r);
    if (!store->check({k})) return -1;
    return std::stoll(str(store->get(k)));
  }

  // Waits for `key`, which rank `from` sets when it reaches collective `what`, while every
  // peer is alive: no deadline while `from` makes progress, an error naming it when its main
  // thread has made none for the timeout (from < 0: no such check).
  void wait_key(const std::string& key, int from = -1, const std::string& what = "") {
    int sleep_us = 100;
    int64_t last = -2;
    auto changed = Clock::now(), probed = Clock::now();
    while (true) {
      bool ok = false;
      try {
        ok = store->check({key});
      } catch (const std::exception& e) {
        check();
        throw Error("lost the connection to the job's store at " + where + " (" + e.what() +
                    "); rank 0, which serves it, has probably exited");
      }
      if (ok) return;
      check();
      if (from >= 0 && from != env.rank && seconds_since(probed) >= interval) {
        probed = Clock::now();
        int64_t p = -1;
        try {
          p = progress_of(from);
        } catch (const std::exception& e) {
          check();
          throw Error("lost the connection to the job's store at " + where + " (" + e.what() +
                      "); rank 0, which serves it, has probably exited");
        }
        if (p != last) {
          last = p;
          changed = Clock::now();
        } else if (seconds_since(changed) > env.timeout_s) {
          {
            std::lock_guard<std::mutex> lk(mu);
            dead[from] = 1;  // finish() does not wait for it
          }
          char b[64];
          snprintf(b, sizeof b, "%g", env.timeout_s);
          set_failure(who(from) + " has not reached '" + what +
                      "': its heartbeat comes but its main thread has made no progress for " + b +
                      " s (deadlocked or stuck in one operation; S0_DIST_TIMEOUT sets the limit)");
          check();
        }
      }
      std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
      sleep_us = std::min(sleep_us * 2, 20000);
    }
  }

  void heartbeat_loop() {
    const int W = env.world_size, me = env.rank;
    std::vector<int64_t> last(W, -1);
    std::vector<Clock::time_point> changed(W, Clock::now());
    int64_t my_ticks = -1, published = -1;
    auto my_changed = Clock::now();
    bool lost = false;
    while (true) {
      {
        std::unique_lock<std::mutex> lk(mu);
        if (stop) return;
      }
      // Watchdog: the job has failed and this rank's main thread has not noticed within the
      // timeout (it makes no progress): end the process instead of hanging on.
      const int64_t t = ticks();
      if (t != my_ticks) my_ticks = t, my_changed = Clock::now();
      if (failed && !finishing && seconds_since(my_changed) > env.timeout_s &&
          seconds_since(failed_at) > env.timeout_s) {
        std::string msg;
        {
          std::lock_guard<std::mutex> lk(mu);
          msg = failure;
        }
        std::fprintf(stderr,
                     "error: %s\nerror: rank %d: the job failed and this rank's main thread has "
                     "made no progress for %g s; exiting\n",
                     msg.c_str(), me, env.timeout_s);
        std::fflush(stderr);
        std::_Exit(1);
      }
      if (lost) {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait_for(lk, std::chrono::duration<double>(interval), [this] { return stop; });
        continue;
      }
      try {
        mon_store->add(hb_key(me), 1);
        if (t != published) {
          mon_store->set(prog_key(me), bytes(std::to_string(t)));
          published = t;
        }
        for (int r = 0; r < W; ++r) {
          if (r == me) continue;
          {
            std::lock_guard<std::mutex> lk(mu);
            if (exited[r] || dead[r]) continue;
          }
          if (mon_store->check({exit_key(r)})) {
            const std::string msg = str(mon_store->get(exit_key(r)));
            {
              std::lock_guard<std::mutex> lk(mu);
              exited[r] = 1;
            }
            if (!msg.empty()) set_failure(who(r) + " failed: " + msg);
            continue;
          }
          const int64_t hb = mon_store->add(hb_key(r), 0);
          if (hb != last[r]) {
            last[r] = hb;
            changed[r] = Clock::now();
          } else if (seconds_since(changed[r]) > env.timeout_s) {
            {
              std::lock_guard<std::mutex> lk(mu);
              dead[r] = 1;
            }
            char b[64];
            snprintf(b, sizeof b, "%g", env.timeout_s);
            set_failure(who(r) + " stopped responding: no heartbeat for " + b +
                        " s (killed, crashed or hung; S0_DIST_TIMEOUT sets the limit)");
          }
        }
      } catch (const std::exception& e) {
        set_failure("lost the connection to the job's store at " + where + " (" + e.what() +
                    "); rank 0, which serves it, has probably exited");
        lost = true;
        continue;
      }
      std::unique_lock<std::mutex> lk(mu);
      cv.wait_for(lk, std::chrono::duration<double>(interval), [this] { return stop; });
      if (stop) return;
    }
  }

  void stop_monitor() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv.notify_all();
    if (monitor.joinable()) monitor.join();
  }

#ifndef S0_DIST_NO_GLOO
  c10d::ProcessGroupGloo& group() {
    if (!pg) {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout());
      const std::string ifname = getenv_str("GLOO_SOCKET_IFNAME");
      if (!ifname.empty())
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (is_loopback(env.master_addr))
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      auto prefixed = c10::make_intrusive<c10d::PrefixStore>("gloo", store);
      try {
        pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, env.rank, env.world_size, opts);
      } catch (const std::exception& e) {
        failed_collective("connecting the Gloo process group", e);
      }
    }
    return *pg;
  }
#endif

  // A collective threw: let the heartbeat thread name the rank responsible (it knows within
  // `timeout`), else report the collective's own error.
  [[noreturn]] void failed_collective(const std::string& what, const std::exception& e) {
    const auto t0 = Clock::now();
    while (seconds_since(t0) < env.timeout_s + 2 * interval) {
      if (failed) {
        std::lock_guard<std::mutex> lk(mu);
        throw Error(failure + " (during " + what + ")");
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    throw Error(what + " failed on rank " + std::to_string(env.rank) + ": " + e.what());
  }
};

World::World(const Env& env) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.env = env;
  const int W = env.world_size, me = env.rank;
  if (W < 1 || me < 0 || me >= W)
    throw Error("dist: rank " + std::to_string(me) + " of " + std::to_string(W));
  I.where = env.master_addr + ":" + std::to_string(env.master_port);
  I.exited.assign(W, 0);
  I.dead.assign(W, 0);
  I.info.assign(W, "");
  I.interval = std::clamp(env.timeout_s / 10, 0.02, 1.0);
  if (const char* h = std::getenv("S0_DIST_TEST_HANG")) {
    const std::string v = h;
    const size_t colon = v.find(':');
    if (colon == std::string::npos)
      throw Error("S0_DIST_TEST_HANG='" + v + "' (a test hook) must be <rank>:<collective name>");
    I.hang_rank = static_cast<int>(parse_long("S0_DIST_TEST_HANG", v.substr(0, colon), 0, 1 << 20));
    I.hang_what = v.substr(colon + 1);
  }
  const bool serve = me == 0 && !env.agent_store;
  auto connect = [&](bool server) -> c10::intrusive_ptr<c10d::Store> {
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(env.master_port);
    o.isServer = server;
    o.numWorkers = c10::nullopt;
    o.waitWorkers = false;
    o.timeout = I.join_timeout();
    c10::intrusive_ptr<c10d::Store> tcp;
    try {
      tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
    } catch (const std::exception& e) {
      std::string m = e.what();
      if (m.size() > 400) m = m.substr(0, 400) + "...";
      if (server)
        throw Error("rank 0 cannot serve the job's store on MASTER_ADDR:MASTER_PORT=" + I.where +
                    " (" + m + "); is the port in use?");
      throw Error("rank " + std::to_string(me) +
                  " cannot reach the job's store at MASTER_ADDR:MASTER_PORT=" + I.where +
                  " within " + std::to_string(static_cast<int64_t>(env.join_timeout_s)) + " s (" +
                  m + "); is rank 0 running, and MASTER_ADDR/MASTER_PORT right?");
    }
    return c10::make_intrusive<c10d::PrefixStore>(env.store_prefix + "/s0", tcp);
  };
  I.store = connect(serve);
  I.mon_store = connect(false);
  // Join: no rank claimed twice, one WORLD_SIZE, everybody present.
  auto& S = *I.store;
  if (S.add("join/rank/" + std::to_string(me), 1) != 1)
    throw Error("RANK=" + std::to_string(me) +
                " is claimed by two processes of this job (each needs its own RANK)");
  S.set("info/" + std::to_string(me), bytes(hostname() + " pid " + std::to_string(getpid())));
  if (me == 0) S.set("join/world_size", bytes(std::to_string(W)));
  const auto t0 = Clock::now();
  auto deadline_left = [&] { return env.join_timeout_s - seconds_since(t0); };
  while (!S.check({"join/world_size"})) {
    if (deadline_left() < 0)
      throw Error("rank 0 did not join the job at " + I.where + " within " +
                  std::to_string(static_cast<int64_t>(env.join_timeout_s)) +
                  " s (S0_DIST_JOIN_TIMEOUT)");
    std::this_thread::sleep_for(milliseconds(10));
  }
  const std::string ws0 = str(S.get("join/world_size"));
  if (ws0 != std::to_string(W))
    throw Error("WORLD_SIZE=" + std::to_string(W) + " on rank " + std::to_string(me) +
                " but rank 0 has WORLD_SIZE=" + ws0 +
                " (every process of a job needs the same WORLD_SIZE)");
  S.set("join/ok/" + std::to_string(me), bytes("1"));
  S.add("join/count", 1);
  while (S.add("join/count", 0) < W) {
    if (deadline_left() < 0) {
      std::string missing;
      for (int r = 0; r < W; ++r)
        if (!S.check({"join/ok/" + std::to_string(r)}))
          missing += (missing.empty() ? "" : ",") + std::to_string(r);
      throw Error("only " + std::to_string(S.add("join/count", 0)) +
                  " of WORLD_SIZE=" + std::to_string(W) + " ranks joined the job at " + I.where +
                  " within " + std::to_string(static_cast<int64_t>(env.join_timeout_s)) +
                  " s (S0_DIST_JOIN_TIMEOUT); missing rank(s) " + missing);
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  for (int r = 0; r < W; ++r) I.info[r] = str(S.get("info/" + std::to_string(r)));
  I.monitor = std::thread([this] { impl_->heartbeat_loop(); });
}

World::~World() {
  try {
    finish(std::uncaught_exceptions() > 0 ? "stopped by an error" : "");
  } catch (...) {
  }
}

int World::rank() const { return impl_->env.rank; }
int World::size() const { return impl_->env.world_size; }
const Env& World::env() const { return impl_->env; }
void World::check_peers() { impl_->check(); }

std::string World::unique(const std::string& what) {
  return what + "#" + std::to_string(++impl_->uses[what]);
}

int64_t World::add(const std::string& key, int64_t delta) {
  impl_->check();
  try {
    return impl_->store->add("user/" + key, delta);
  } catch (const std::exception& e) {
    impl_->failed_collective("updating '" + key + "'", e);
  }
}

void World::barrier(const std::string& what) {
  // An all-gather of nothing: each rank waits for every other rank's own key, so a rank that
  // does not arrive is known by number.
  impl_->maybe_hang(what);
  all_gather_impl(what, "");
}

std::vector<std::string> World::gather(const std::string& what, const std::string& mine) {
  Impl& I = *impl_;
  I.maybe_hang(what);
  const auto t0 = Clock::now();
  const std::string k = "gat/" + unique(what) + "/";
  I.check();
  I.store->set(k + std::to_string(I.env.rank), bytes(mine));
  std::vector<std::string> all;
  if (I.env.rank == 0) {
    for (int r = 0; r < I.env.world_size; ++r) {
      const std::string key = k + std::to_string(r);
      I.wait_key(key, r, what);
      all.push_back(str(I.store->get(key)));
      I.store->deleteKey(key);
    }
  }
  I.stats.seconds += seconds_since(t0);
  return all;
}

std::string World::broadcast(const std::string& what, const std::string& from_root) {
  Impl& I = *impl_;
  I.maybe_hang(what);
  const auto t0 = Clock::now();
  const std::string k = "bc/" + unique(what);
  I.check();
  if (I.env.world_size == 1) return from_root;
  std::string v;
  if (I.env.rank == 0) {
    I.store->set(k, bytes(from_root));
    v = from_root;
  } else {
    I.wait_key(k, 0, what);
    v = str(I.store->get(k));
    if (I.store->add(k + "/read", 1) == I.env.world_size - 1) {
      I.store->deleteKey(k);
      I.store->deleteKey(k + "/read");
    }
  }
  I.stats.seconds += seconds_since(t0);
  return v;
}

std::vector<std::string> World::all_gather(const std::string& what, const std::string& mine) {
  impl_->maybe_hang(what);
  return all_gather_impl(what, mine);
}

std::vector<std::string> World::all_gather_impl(const std::string& what, const std::string& mine) {
  Impl& I = *impl_;
  const auto t0 = Clock::now();
  const std::string k = "ag/" + unique(what) + "/";
  I.check();
  I.store->set(k + std::to_string(I.env.rank), bytes(mine));
  std::vector<std::string> all;
  for (int r = 0; r < I.env.world_size; ++r) {
    const std::string key = k + std::to_string(r);
    I.wait_key(key, r, what);
    all.push_back(str(I.store->get(key)));
  }
  if (I.store->add(k + "read", 1) == I.env.world_size) {
    for (int r = 0; r < I.env.world_size; ++r) I.store->deleteKey(k + std::to_string(r));
    I.store->deleteKey(k + "read");
  }
  I.stats.seconds += seconds_since(t0);
  return all;
}

void World::agree(const std::string& what, const std::function<void()>& fn) {
  std::string err;
  try {
    fn();
  } catch (const std::exception& e) {
    err = e.what();
    if (err.empty()) err = "error";
  }
  auto all = all_gather(what, err);
  for (size_t r = 0; r < all.size(); ++r)
    if (!all[r].empty()) {
      if (static_cast<int>(r) == rank()) throw Error(all[r]);
      throw Error("rank " + std::to_string(r) + ": " + all[r]);
    }
}

void World::allreduce_sum(std::vector<float>& f, std::vector<double>& d) {
  Impl& I = *impl_;
  const int W = I.env.world_size;
  if (W == 1) return;
  // Wait at the store (no deadline while every peer is alive; a slow rank is not a fault),
  // then the Gloo collective, which is bounded by the timeout.
  barrier("allreduce");
  const auto t0 = Clock::now();
  const size_t nf = f.size() * sizeof(float), nd = d.size() * sizeof(double), n = nf + nd;
  at::Tensor in = at::empty({static_cast<int64_t>(n)}, at::kByte);
  std::memcpy(in.data_ptr(), f.data(), nf);
  std::memcpy(static_cast<char*>(in.data_ptr()) + nf, d.data(), nd);
  std::vector<at::Tensor> ins{in};
  std::vector<std::vector<at::Tensor>> outs(1);
  for (int r = 0; r < W; ++r) outs[0].push_back(at::empty({static_cast<int64_t>(n)}, at::kByte));
#ifndef S0_DIST_NO_GLOO
  try {
    auto work = I.group().allgather(outs, ins);
    work->wait(I.timeout());
  } catch (const std::exception& e) {
    I.failed_collective("the gradient allreduce", e);
  }
#else
  {
    auto all = all_gather("allreduce", std::string(static_cast<const char*>(in.data_ptr()), n));
    for (int r = 0; r < W; ++r) std::memcpy(outs[0][r].data_ptr(), all[r].data(), n);
  }
#endif
  // Rank order: rank 0's values, + rank 1's, + ... (the same on every rank).
  std::vector<float> sf(f.size(), 0.0f);
  std::vector<double> sd(d.size(), 0.0);
  for (int r = 0; r < W; ++r) {
    const auto* p = static_cast<const char*>(outs[0][r].data_ptr());
    const auto* pf = reinterpret_cast<const float*>(p);
    for (size_t i = 0; i < f.size(); ++i) sf[i] = r == 0 ? pf[i] : sf[i] + pf[i];
    std::vector<double> tmp(d.size());
    std::memcpy(tmp.data(), p + nf, nd);
    for (size_t i = 0; i < d.size(); ++i) sd[i] = r == 0 ? tmp[i] : sd[i] + tmp[i];
  }
  f.swap(sf);
  d.swap(sd);
  I.stats.seconds += seconds_since(t0);
  I.stats.bytes_sent += static_cast<int64_t>(n);
  I.stats.bytes_received += static_cast<int64_t>(n) * (W - 1);
  I.stats.allreduces++;
}

void World::allreduce_sum(std::vector<at::Tensor>& ts, std::vector<double>& d) {
  Impl& I = *impl_;
  const int W = I.env.world_size;
  if (W == 1) return;
  for (const auto& t : ts)
    if (t.scalar_type() != at::kFloat) throw Error("allreduce_sum: expected float32 tensors");
#ifdef S0_DIST_NCCL
  if (!ts.empty() && ts[0].is_cuda()) {
    // NCCL for tensors on the GPU: the same all-gather and rank-order sum as below, on the
    // device. Not tested in this project (no CUDA build here).
    barrier("allreduce");
    const auto t0 = Clock::now();
    std::vector<at::Tensor> flat_parts;
    for (const auto& t : ts) flat_parts.push_back(t.reshape({-1}));
    at::Tensor in = at::cat(flat_parts);
    std::vector<at::Tensor> ins{in};
    std::vector<std::vector<at::Tensor>> outs(1);
    for (int r = 0; r < W; ++r) outs[0].push_back(at::empty_like(in));
    try {
      if (!I.nccl) {
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = I.timeout();
        auto prefixed = c10::make_intrusive<c10d::PrefixStore>("nccl", I.store);
        I.nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, I.env.rank, W, opts);
      }
      auto work = I.nccl->allgather(outs, ins);
      work->wait(I.timeout());
    } catch (const std::exception& e) {
      I.failed_collective("the NCCL gradient allreduce", e);
    }
    at::Tensor sum = outs[0][0].clone();
    for (int r = 1; r < W; ++r) sum.add_(outs[0][r]);
    int64_t off = 0;
    for (auto& t : ts) {
      t.copy_(sum.narrow(0, off, t.numel()).view_as(t));
      off += t.numel();
    }
    I.stats.seconds += seconds_since(t0);
    I.stats.bytes_sent += in.numel() * 4;
    I.stats.bytes_received += in.numel() * 4 * (W - 1);
    std::vector<float> none;
    allreduce_sum(none, d);  // the loss and token count: a few bytes through the CPU group
    return;
  }
#endif
  std::vector<float> flat;
  for (const auto& t : ts) {
    at::Tensor c = t.to(at::kCPU).contiguous();
    const float* p = c.data_ptr<float>();
    flat.insert(flat.end(), p, p + c.numel());
  }
  allreduce_sum(flat, d);
  size_t off = 0;
  for (auto& t : ts) {
    at::Tensor c = at::from_blob(flat.data() + off, t.sizes(), at::kFloat);
    t.copy_(c);
    off += static_cast<size_t>(t.numel());
  }
}

CommStats World::stats() const { return impl_->stats; }

void World::finish(const std::string& failure) {
  Impl& I = *impl_;
  if (I.finished) return;
  I.finished = true;
  I.finishing = true;
  const int W = I.env.world_size, me = I.env.rank;
  // A failing rank drops its Gloo connections first: peers blocked in a collective with it
  // fail at once instead of at the timeout.
  if (!failure.empty()) I.pg.reset();
  if (me != 0) I.stop_monitor();
  try {
    I.store->set(Impl::exit_key(me), bytes(failure));
  } catch (...) {
  }
  if (me == 0 && !I.env.agent_store) {
    // Keep serving the store until every peer has exited or is known dead (bounded).
    const auto t0 = Clock::now();
    while (seconds_since(t0) < I.env.timeout_s + 2 * I.interval) {
      bool all = true;
      for (int r = 1; r < W && all; ++r) {
        {
          std::lock_guard<std::mutex> lk(I.mu);
          if (I.exited[r] || I.dead[r]) continue;
        }
        try {
          all = I.store->check({Impl::exit_key(r)});
        } catch (...) {
          all = true;
          break;
        }
      }
      if (all) break;
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  I.stop_monitor();
  I.pg.reset();
#ifdef S0_DIST_NCCL
  I.nccl.reset();
#endif
  I.mon_store.reset();
  I.store.reset();
}

// ---------------------------------------------------------------------------------------

World* current() { return g_current; }

struct ScopedWorld::Hook {
  std::function<void()>* prev;
  ScopedInterruptHook hook;
  Hook(World& w, std::function<void()>* p)
      : prev(p), hook([&w, p] {
          if (p) (*p)();
          w.check_peers();
        }) {}
};

ScopedWorld::ScopedWorld(World& w) : prev_(g_current) {
  g_current = &w;
  hook_ = std::make_unique<Hook>(w, detail::interrupt_hook());
}

ScopedWorld::~ScopedWorld() {
  hook_.reset();
  g_current = prev_;
}

Alone::Alone() : prev_(g_current) { g_current = nullptr; }
Alone::~Alone() { g_current = prev_; }

std::string rank_file(const std::string& prefix, int rank, const std::string& suffix) {
  return prefix + ".rank" + std::to_string(rank) + suffix;
}

std::vector<std::string> rank_files(const std::string& prefix, const std::string& suffix) {
  namespace fs = std::filesystem;
  fs::path p(prefix);
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  const std::string base = p.filename().string() + ".rank";
  std::vector<std::pair<long, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= base.size() + suffix.size() || name.rfind(base, 0) != 0) continue;
    if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string mid = name.substr(base.size(), name.size() - base.size() - suffix.size());
    if (mid.empty() || mid.find_first_not_of("0123456789") != std::string::npos || mid.size() > 7)
      continue;
    found.push_back({std::stol(mid), (dir / name).string()});
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [r, path] : found) out.push_back(path);
  return out;
}

}  // namespace s0::dist
