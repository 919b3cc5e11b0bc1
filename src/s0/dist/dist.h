#pragma once
// Scale-out on torch.distributed (c10d): the processes of one job find each other exactly as
// `torchrun` sets them up (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; a TCPStore
// served by rank 0, or by torchrun's agent when TORCHELASTIC_USE_AGENT_STORE=True), exchange
// small control messages through that store and reduce training gradients with a Gloo
// process group (or NCCL for CUDA tensors, when built against a CUDA libtorch with NCCL).
//
// Faults: every rank beats a heartbeat into the store from a background thread and watches
// the others'; a rank that exits with an error, dies or stops beating for `timeout` is
// reported to the others as an s0::Error naming it (thrown from check_peers(), which the
// long loops reach through poll_interrupt(), from every wait, and from collectives).
// Hangs: the heartbeat thread also publishes this process's progress counter
// (util/interrupt.h: every poll_interrupt() - decode steps, training examples -, every
// sandboxed check, every wait here); a rank waiting in a collective for a peer whose progress
// has not moved for `timeout` (deadlocked, or stuck in one operation) stops with an error
// naming that peer, even though its heartbeat still comes. A rank whose job has failed and
// whose own progress does not move for `timeout` exits (status 1) by itself.
//
// This header is torch-free; only dist.cpp includes the c10d headers.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace s0::dist {

// Where a process stands in a job, from the environment torchrun sets.
struct Env {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr;
  int master_port = 0;
  bool agent_store = false;  // torchrun's agent serves the store: every rank is a client
  std::string
      store_prefix;  // "/worker/attempt_<TORCHELASTIC_RESTART_COUNT>" with the agent's store
  // Seconds: rendezvous, heartbeat silence and collective timeout (S0_DIST_TIMEOUT, default 300).
  double timeout_s = 300;
  // Seconds the rendezvous waits for the store and for every rank to join
  // (S0_DIST_JOIN_TIMEOUT, default timeout_s): starting N processes can be slow on a busy machine.
  double join_timeout_s = 300;
};

// The job described by the environment, or nullopt when WORLD_SIZE is unset (a plain single
// process). A malformed or inconsistent variable is an s0::Error naming it.
std::optional<Env> env_from_environment();

struct CommStats {
  double seconds = 0;      // wall time inside collectives (allreduce, gather, broadcast, barrier)
  int64_t bytes_sent = 0;  // payload this rank contributed to allreduces
  int64_t bytes_received = 0;
  int64_t allreduces = 0;
};

class World {
 public:
  // Rendezvous: connects to (rank 0: serves) the store, checks that every rank agrees on
  // WORLD_SIZE and that no rank is claimed twice, waits for all ranks (at most timeout_s),
  // starts the heartbeat thread.
  explicit World(const Env& env);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const;
  int size() const;
  bool root() const { return rank() == 0; }
  const Env& env() const;

  // Throws s0::Error naming the first rank found failed, dead or silent (else returns).
  void check_peers();

  // Store-backed collectives for control data; every rank calls them in the same order.
  // They wait as long as every peer is alive and the peers waited for make progress (no
  // deadline for a slow peer), and fail naming a peer that is dead, failed, or alive but
  // without progress for the timeout.
  void barrier(const std::string& what);
  std::vector<std::string> gather(const std::string& what,
                                  const std::string& mine);  // all W at rank 0, {} elsewhere
  std::string broadcast(const std::string& what, const std::string& from_root);
  std::vector<std::string> all_gather(const std::string& what, const std::string& mine);
  // Runs `fn` on every rank; if it threw on any rank, every rank throws an s0::Error with
  // the first failing rank's message ("rank k: ...").
  void agree(const std::string& what, const std::function<void()>& fn);
  // A counter shared by the job (returns the value after adding).
  int64_t add(const std::string& key, int64_t delta);
  // A name unique to this call site's n-th use (same on every rank: calls happen in order).
  std::string unique(const std::string& what);

  // Gloo: element-wise sums over the ranks of `f` and `d` (same lengths on every rank),
  // summed in rank order 0, 1, ..., W-1 so that every rank and every rerun gets the same bits.
  void allreduce_sum(std::vector<float>& f, std::vector<double>& d);
  // The same for float32 tensors (summed in place, same shapes on every rank): CPU tensors go
  // through the call above; CUDA tensors through NCCL (an all-gather, then the same rank-order
  // sum on the GPU) when s0 was built with NCCL (S0_DIST_NCCL), else through the CPU.
  void allreduce_sum(std::vector<at::Tensor>& f, std::vector<double>& d);

  CommStats stats() const;

  // Ends the job for this rank: publishes the exit status (failure message, or "" for
  // success) so peers stop with it, and (rank 0) keeps the store up until every rank is done.
  void finish(const std::string& failure);

  struct Impl;

 private:
  std::vector<std::string> all_gather_impl(const std::string& what, const std::string& mine);
  std::unique_ptr<Impl> impl_;
};

// The world of the running job, or nullptr (single process). Set while a ScopedWorld lives.
World* current();

// Makes `w` the current world and routes poll_interrupt() on this thread to check_peers().
class ScopedWorld {
 public:
  explicit ScopedWorld(World& w);
  ~ScopedWorld();
  ScopedWorld(const ScopedWorld&) = delete;
  ScopedWorld& operator=(const ScopedWorld&) = delete;

 private:
  World* prev_;
  struct Hook;
  std::unique_ptr<Hook> hook_;
};

// Work this rank does by itself inside a distributed job (e.g. one training run of an
// experiment): current() is nullptr while it lives, so the pipeline runs as one process; the
// peers are still checked (and this rank's progress still counted) through poll_interrupt().
class Alone {
 public:
  Alone();
  ~Alone();
  Alone(const Alone&) = delete;
  Alone& operator=(const Alone&) = delete;

 private:
  World* prev_;
};

// "<prefix>.rank<r><suffix>" paths next to `prefix` that exist (any r), sorted by r.
std::vector<std::string> rank_files(const std::string& prefix, const std::string& suffix);
std::string rank_file(const std::string& prefix, int rank, const std::string& suffix);

}  // namespace s0::dist
